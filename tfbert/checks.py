"""Checks that config values share: is it a number, a whole number in range."""


def is_number(value) -> bool:
    """Whether `value` is an int or a float (a bool is not, though Python counts it as an int)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_whole_number(value, low: int, high: int | None = None) -> bool:
    """Whether `value` is an int (a bool is not) from `low` up to `high` (inclusive; None: no limit)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
