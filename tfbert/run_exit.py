"""How a run that does not finish ends: a line that says why (and, after a stop, how to
continue), in the run's train.log too; in a sweep, as the failure of that job alone."""

import contextlib
import logging
import signal
import traceback

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

log = logging.getLogger(__name__)


@contextlib.contextmanager
def failures_logged():
    """What ends a run early (an exit message, an exception's traceback) is also written to
    the run's log files (Hydra's train.log); the console shows it as Python does."""
    try:
        yield
    except SystemExit as error:
        if error.code not in (None, 0):
            write_to_log_files(str(error.code))
        raise
    except BaseException:
        write_to_log_files(traceback.format_exc().rstrip())
        raise


class JobFailed(RuntimeError):
    """What ends a sweep's job that a single run would end with a one-line message (a
    ConfigError, a NaN loss): an exception, which Hydra records against the job before it
    goes on with the sweep (a SystemExit would end the whole sweep)."""


def run_failed(message: str) -> BaseException:
    """The exception that ends a run with `message`: SystemExit (the line alone) for a
    single run, JobFailed for a job of a sweep (`python train.py -m ...`)."""
    in_sweep = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return JobFailed(message) if in_sweep else SystemExit(message)


class Terminated(BaseException):  # as KeyboardInterrupt: no `except Exception` takes it
    """SIGTERM arrived while the run was not training (training saves a backup and stops on it)."""


@contextlib.contextmanager
def stops_resumable(run_dir: str):
    """A Ctrl-C or SIGTERM outside training (which saves a backup and stops itself) ends the
    run with a one-line message that says how to continue it: the run dir's backup, if
    any, holds everything done so far."""

    def terminated(signum, frame):
        raise Terminated

    def message(stop: BaseException) -> str:
        stopped = "interrupted" if isinstance(stop, KeyboardInterrupt) else "stopped on SIGTERM"
        return f"tfbert: {stopped}; the same command continues the run in its run dir: add hydra.run.dir={run_dir}"

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    except (KeyboardInterrupt, Terminated) as stop:
        raise SystemExit(message(stop)) from None
    except SystemError as error:  # the stop, raised inside TensorFlow's C++ code (a SavedModel's tracing)
        if not isinstance(error.__context__, (KeyboardInterrupt, Terminated)):
            raise
        raise SystemExit(message(error.__context__)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_to_log_files(message: str) -> None:
    """`message` as an ERROR record to the root logger's file handlers only (not the console's)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
