"""task=files: labelled data from local CSV, TSV, JSON Lines or Parquet files.

Files are read by `datasets`; tokenizing the same rows with the same tokenizer again
is served from tfbert.preprocessing's cache of token ids.
"""

import csv
import json
from pathlib import Path

import datasets
import pyarrow
import pyarrow.parquet

from tfbert.tasks.labeled import build_task
from tfbert.tasks.task_data import InvalidTaskData, TaskData

# suffix -> (datasets builder, its options). A TSV is plain tab-separated lines, as IANA
# defines it and GLUE's files are: a `"` is part of the text, not a quote. In either, only an
# empty cell is missing (pandas would also take `NA`, `None`, `null`, `nan`, ... for one).
ONLY_EMPTY_IS_MISSING = {"keep_default_na": False, "na_values": [""]}
FORMATS = {
    ".csv": ("csv", ONLY_EMPTY_IS_MISSING),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": csv.QUOTE_NONE, **ONLY_EMPTY_IS_MISSING}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}
TEXT_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


def load_files(
    train_file: str,
    validation_file: str | None = None,
    test_file: str | None = None,
    name: str = "files",
    **columns_and_options,
) -> TaskData:
    """A task from local files; missing validation/test splits are carved from train.

    Args:
        train_file, validation_file, test_file: .csv, .tsv, .jsonl/.json or .parquet.
        name: task name for run directories and model cards.
        columns_and_options: the arguments of `tfbert.tasks.labeled.build_task`
            (text_column, text_pair_column, label_column, problem_type, on_invalid, ...).
    """
    files = {"train": train_file, "validation": validation_file, "test": test_file}
    raw = {split: read_table(Path(path)) for split, path in files.items() if path}
    sources = {split: f"{files[split]} ({split})" for split in raw}
    return build_task(name, raw, sources, **columns_and_options)


def read_table(path: Path) -> datasets.Dataset:
    """One file as a Dataset, with clear errors for missing, empty or non-UTF-8 files."""
    if path.suffix not in FORMATS:
        raise InvalidTaskData(f"{path}: unknown format {path.suffix!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    if path.suffix in TEXT_FORMATS:
        content = path.read_bytes()
        if not content.strip():
            raise InvalidTaskData(f"{path} is empty")
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as error:
            line = content[: error.start].count(b"\n") + 1
            raise InvalidTaskData(
                f"{path}, line {line}: bytes {content[error.start:error.end]!r} are not UTF-8; "
                "save the file as UTF-8"
            ) from None
    elif parquet_rows(path) == 0:  # datasets' own error would be an Arrow batch-size one
        raise InvalidTaskData(f"{path} has no rows")
    builder, options = FORMATS[path.suffix]
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # datasets wraps every parser error in its own type
        cause = error.__cause__ or error
        if "corresponds to no data" in str(cause):  # a CSV header and nothing else
            raise InvalidTaskData(f"{path} has a header but no rows") from None
        if builder == "json" and (bad := not_json_line(content)):  # the parser names a byte position only
            raise InvalidTaskData(f"{path}, {bad}") from None
        raise InvalidTaskData(f"{path} could not be read as {builder}: {cause}") from None
    if len(table) == 0:
        raise InvalidTaskData(f"{path} has {'a header but ' if path.suffix in ('.csv', '.tsv') else ''}no rows")
    return table


def parquet_rows(path: Path) -> int | None:
    """The rows a Parquet file's metadata counts; None for a file that is not Parquet."""
    try:
        return pyarrow.parquet.read_metadata(path).num_rows
    except pyarrow.ArrowException:
        return None  # datasets' error names what is wrong


def not_json_line(content: bytes) -> str | None:
    """`line N: not JSON (why)` for the first line of a JSON Lines file that is not JSON; None
    for a file whose lines all are, or a JSON array (its parser's position is the place)."""
    text = content.decode("utf-8")
    if text.lstrip().startswith("["):
        return None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {number}: not JSON ({error})"
    return None
