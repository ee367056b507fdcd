"""Checks that config values share: is it a number, a whole number in range, a flag; and
ConfigError, a bad value named by its config key."""

from collections.abc import Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException
from omegaconf.errors import MissingMandatoryValue


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


# The largest seed every generator a run seeds takes (NumPy's: below 2**32).
SEED_LIMIT = 2**32 - 1


def check_seed(**seeds) -> None:
    """ValueError naming the first of `seeds` (name=value) that is not a whole number from 0
    to SEED_LIMIT."""
    for name, value in seeds.items():
        if not is_whole_number(value, 0, SEED_LIMIT):
            raise ValueError(f"{name} must be a whole number from 0 to {SEED_LIMIT}, got {value!r}")


class ConfigError(ValueError):
    """A config value that cannot work, named by its key (`head.dropout must be ...`);
    train.py shows it as a one-line error, without a traceback."""


# What Python and Keras say of a keyword argument a constructor does not take (`+head.dropuot=0.2`).
UNKNOWN_ARGUMENT = ("unexpected keyword argument", "Keyword argument not understood")


# What building a group raises for a value that cannot work: a bad value, a file that is not
# there, a key the constructor does not take, a hub that is out of reach (task=hub, sst2, ...),
# a multi_worker chief that never came up.
NAMED_ERRORS = (ValueError, FileNotFoundError, TypeError, ConnectionError, TimeoutError)


@contextmanager
def config_group(group: str, keys) -> Iterator[None]:
    """Raise a ValueError (or a FileNotFoundError: a path that is not there; a ConnectionError:
    a hub out of reach; a TimeoutError: a chief out of reach) from building config group
    `group` (its `keys`) as a ConfigError that names the key: `dropout must be ...` from the
    head becomes `head.dropout must be ...`. A key the config leaves `???` (task.train_file of
    task=files) is named the same way, and so is a key the constructor does not take
    (`+head.dropuot=0.2`: a TypeError that Python or Keras raise)."""
    try:
        yield
    except ConfigError:
        raise
    except MissingMandatoryValue as error:
        raise ConfigError(
            f"{error.full_key} has no value (it is ??? in the config); set it: {error.full_key}=..."
        ) from None
    except (*NAMED_ERRORS, InstantiationException) as error:
        if isinstance(error, InstantiationException):  # Hydra's wrapper around what the constructor raised
            if not isinstance(error.__cause__, NAMED_ERRORS):
                raise
            error = error.__cause__
        if isinstance(error, TypeError):
            if not any(words in str(error) for words in UNKNOWN_ARGUMENT):
                raise error
            raise ConfigError(f"{group}: {error} (a misspelt key? `--cfg job` shows the valid ones)") from None
        message = str(error)
        first = message.split(maxsplit=1)[0].split("=")[0] if message else ""
        if first != group and not first.startswith(f"{group}."):
            message = f"{group}.{message}" if first in keys else f"{group}: {message}"
        raise ConfigError(message) from error
