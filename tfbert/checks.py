"""A check that config values share: is it a whole number in range."""


def is_whole_number(value, low: int, high: int | None = None) -> bool:
    """Whether `value` is an int (a bool is not) from `low` up to `high` (inclusive; None: no limit)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high)
