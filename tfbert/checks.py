"""Checks that config values share: is it a number, a whole number in range, a flag."""


def is_number(value) -> bool:
    """Whether `value` is an int or a float (a bool is not, though Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value, low: int, high: int | None = None) -> bool:
    """Whether `value` is an int (a bool is not) from `low` up to `high` (inclusive; None: no limit)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)


def check_flags(**flags) -> None:
    """ValueError naming the first of `flags` (name=value) that is not true or false: a
    config's `no` or `off` arrives as a string, which Python would take as true."""
    for name, value in flags.items():
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be true or false, got {value!r}")
