"""Files written whole or not at all: a partial file beside the target, then a rename."""

import contextlib
import os
from pathlib import Path


@contextlib.contextmanager
def atomic_file(path: Path, newline: str | None = None):
    """A text file (UTF-8) to write that replaces `path` once the block ends without error;
    on any error, or an interrupt, `path` keeps what it held and the partial file is removed.
    An OSError writing it (a full disk, no permission) names `path`.
    """
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")  # same directory: the rename is atomic
    try:
        with partial.open("w", encoding="utf-8", newline=newline) as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
    except OSError as error:  # a write's own error names no file, an open's the partial one
        partial.unlink(missing_ok=True)
        raise OSError(error.errno, f"cannot write {path}: {error.strerror}") from error
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
