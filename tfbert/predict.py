"""Classify texts with an exported SavedModel; loads only tensorflow and tensorflow_text.

    python -m tfbert.predict <export> "a gripping film" "dull and long"
    python -m tfbert.predict <export> --input reviews.csv --output predictions.jsonl
    python -m tfbert.predict <export> --input reviews.tsv --text-column review --output predictions.csv

<export> is a version directory (`.../sentiment/1`) or the directory holding the
versions (`.../sentiment`: the highest is used). Inputs, as task=files reads them:
    .txt            one text per line (blank lines are empty texts, so lines and outputs align)
    .csv, .tsv      a header row with a `text` column (and `text_pair` for pair models); a .tsv
                    is plain tab-separated lines, without quoting (a `"` is text)
    .jsonl, .json   one object per line, or (.json) an array of objects, with a `text` key
                    (and `text_pair`)
    .parquet        a table with a `text` column (and `text_pair`); needs pyarrow
--text-column and --text-pair-column name other columns (as task.text_column does); an
empty cell or a null is an empty text. Bytes that are not UTF-8 read as U+FFFD in the texts
written and do not reach the model; a warning names the first.
Prints `label<TAB>probability<TAB>text` per text (`value<TAB>text` for regression; for
multi-label, the labels at or above the threshold, comma-separated, `-` for none);
--output also writes, for each text, its input texts, every output of the signature
(label, label_id, probabilities, logits, predicted, ...), `probability`, that of label,
and for multi-label `labels`, the names of the predicted classes (comma-separated in a
.csv cell; the `predicted_<class>` columns give them exactly):
    .jsonl  one JSON object per line
    .csv    one row per text; a per-class output takes a column per class, named
            `<output>_<class>` (`probabilities_negative`, `probabilities_positive`, ...)
Any string gets a prediction: empty or whitespace-only texts are classified from
[CLS] [SEP] alone, bytes that are not UTF-8 are dropped, long texts are truncated.
"""

import argparse
import codecs
import csv
import io
import json
import os
import sys
from pathlib import Path

import tensorflow as tf
import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)

from tfbert.atomic import atomic_file
from tfbert.threads import cpu_cores, one_thread_per_op

INPUT_SUFFIXES = (".txt", ".csv", ".tsv", ".jsonl", ".json", ".parquet")
OUTPUT_SUFFIXES = (".jsonl", ".csv")
CSV_FIRST_COLUMNS = ("text", "text_pair", "labels", "label", "probability", "value")


class InvalidInput(ValueError):
    """An input file or export directory that cannot be read; the message says why."""


def find_saved_model(path: Path) -> Path:
    """`path` if it holds saved_model.pb, else its highest-numbered version subdirectory."""
    if (path / "saved_model.pb").is_file():
        return path
    versions = sorted(
        (int(child.name), child) for child in path.glob("*") if child.name.isdigit() and (child / "saved_model.pb").is_file()
    )
    if not versions:
        raise InvalidInput(f"{path} holds no saved_model.pb, nor version subdirectories (1/, 2/, ...) with one")
    return versions[-1][1]


def load_serving(path: Path):
    """The `serving_default` signature of the export at `path` (string columns -> outputs) and
    its class names in label-id order (None from exports older than tfbert's `label_names`)."""
    loaded = tf.saved_model.load(str(find_saved_model(path)))
    label_names = getattr(loaded, "label_names", None)
    class_names = None if label_names is None else [name.decode("utf-8") for name in label_names.numpy()]
    return loaded.signatures["serving_default"], class_names


def text_columns(serving) -> list[str]:
    """The string inputs the model takes: ["text"] or ["text", "text_pair"]."""
    return sorted(serving.structured_input_signature[1])


def read_inputs(path: Path, columns: list[str], names: dict[str, str] | None = None) -> dict[str, list[bytes]]:
    """Texts of the model's `columns` from a file (see the module doc), as UTF-8 bytes; `names`
    maps a model column to the file's name for it (default: the same name)."""
    names = {column: (names or {}).get(column, column) for column in columns}
    if path.suffix not in INPUT_SUFFIXES:
        raise InvalidInput(f"--input {path}: unknown file type {path.suffix!r}; valid: {', '.join(INPUT_SUFFIXES)}")
    if path.suffix == ".parquet":
        rows = parquet_rows(path, list(names.values()))
    else:
        content = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # as spreadsheet programs save "UTF-8"
        try:
            content.decode("utf-8")
        except UnicodeDecodeError as error:  # classified all the same, as the export does any string
            line = content[: error.start].count(b"\n") + 1
            print(f"tfbert.predict: warning: --input {path}, line {line}: bytes {content[error.start:error.end]!r} "
                  "are not UTF-8 (the file may be in another encoding): such bytes read as U+FFFD and do not reach "
                  "the model; save the file as UTF-8", file=sys.stderr)
        if path.suffix == ".txt":
            if columns != ["text"]:
                raise InvalidInput(f"--input {path}: this model reads {columns}; give a file with those columns")
            return {"text": content.splitlines()}
        text = content.decode("utf-8", errors="replace")
        if path.suffix == ".csv" and (line := unclosed_quote(text)) is not None:
            raise InvalidInput(f"--input {path}, line {line}: a quoted field is never closed (it would take in "
                               "every row after it)")
        if path.suffix in (".csv", ".tsv"):
            # A TSV is plain tab-separated lines, as task=files reads it: a `"` is text.
            dialect = {"delimiter": ","} if path.suffix == ".csv" else {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
            rows = list(csv.DictReader(io.StringIO(text, newline=""), **dialect))
            found = rows[0].keys() if rows else []
            if rows and (missing := [name for name in names.values() if name not in found]):
                raise InvalidInput(f"--input {path}: no column {missing} in the header; found {list(found)}{RENAME_HINT}")
            rows = [{name: row[name] or "" for name in names.values()} for row in rows]  # a short row: empty cells
        else:
            rows = json_rows(path, text, list(names.values()))
    return {column: [row[name].encode("utf-8") for row in rows] for column, name in names.items()}


RENAME_HINT = " (--text-column / --text-pair-column name the file's columns)"


def unclosed_quote(text: str) -> int | None:
    """The line where a quoted field starts that the end of CSV `text` cuts off, or None. (The
    csv module reads such a field to the end of the file, taking in the rows after it.)"""
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    starts = [0]
    for _ in reader:
        starts.append(reader.line_num)
    last = lines[starts[-2]:] if len(starts) > 1 else []
    try:
        list(csv.reader(last, strict=True))
    except csv.Error as error:
        if "unexpected end of data" in str(error):
            return starts[-2] + 1
    return None


def json_rows(path: Path, text: str, names: list[str]) -> list[dict]:
    """The objects of a JSON lines file, or of a .json file's array, each with string `names`."""
    if path.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = list(enumerate(json.loads(text), start=1))
        except json.JSONDecodeError as error:
            raise InvalidInput(f"--input {path}: not JSON ({error})") from None
        where = "item"
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as error:
                    raise InvalidInput(f"--input {path}, line {number}: not JSON ({error})") from None
        where = "line"
    for number, row in rows:
        if isinstance(row, dict) and (missing := [name for name in names if name not in row]):
            raise InvalidInput(f"--input {path}, {where} {number}: no key {missing}; found {list(row)}{RENAME_HINT}")
        if not isinstance(row, dict) or not all(isinstance(row[name], str | None) for name in names):
            shown = json.dumps(row, ensure_ascii=False)[:80]
            raise InvalidInput(f"--input {path}, {where} {number}: expected an object with string (or null) "
                               f"keys {names}, got {shown}")
    return [{name: row[name] or "" for name in names} for _, row in rows]  # null: an empty text, as an empty cell


def parquet_rows(path: Path, names: list[str]) -> list[dict]:
    """The `names` columns of a Parquet file as rows (pyarrow: installed with tfbert's training side)."""
    try:
        import pyarrow.parquet
    except ImportError:
        raise InvalidInput(f"--input {path}: reading Parquet needs pyarrow (pip install pyarrow)") from None
    try:
        table = pyarrow.parquet.read_table(path)
    except pyarrow.ArrowException as error:
        raise InvalidInput(f"--input {path}: not a Parquet file ({error})") from None
    if missing := [name for name in names if name not in table.column_names]:
        raise InvalidInput(f"--input {path}: no column {missing}; found {table.column_names}{RENAME_HINT}")
    rows = table.select(names).to_pylist()
    for number, row in enumerate(rows, start=1):
        if not all(isinstance(row[name], str) or row[name] is None for name in names):
            raise InvalidInput(f"--input {path}, row {number}: expected strings in {names}, got {row}")
    return [{name: row[name] or "" for name in names} for row in rows]


def predict(serving, inputs: dict[str, list[bytes]], batch_size: int = 32, class_names: list[str] | None = None) -> list[dict]:
    """One prediction per row of `inputs` (column -> texts), `batch_size` rows per model call.

    Each prediction holds the input texts and every output of the signature for that row,
    plus `probability`, the probability of `label`, when the model predicts labels, and,
    for a multi-label model, `labels`: the classes it predicts, named by `class_names` (in
    label-id order; without them, by their label ids).
    """
    rows = len(next(iter(inputs.values())))
    if rows == 0:
        raise InvalidInput("no texts to classify: give texts as arguments or an --input file with at least one")
    predictions = []
    for start in range(0, rows, batch_size):
        batch = {column: texts[start : start + batch_size] for column, texts in inputs.items()}
        outputs = {name: value.numpy() for name, value in serving(**{
            column: tf.constant(texts, tf.string) for column, texts in batch.items()
        }).items()}
        for row in range(len(batch["text"])):
            prediction = {column: texts[row].decode("utf-8", errors="replace") for column, texts in batch.items()}
            prediction.update({name: json_value(value[row]) for name, value in outputs.items()})
            if "label_id" in prediction:
                prediction["probability"] = prediction["probabilities"][prediction["label_id"]]
            if "predicted" in prediction:
                names = class_names or [str(label_id) for label_id in range(len(prediction["predicted"]))]
                prediction["labels"] = [name for name, chosen in zip(names, prediction["predicted"]) if chosen]
            predictions.append(prediction)
    return predictions


def json_value(value):
    """A numpy row or scalar of a signature output as plain Python, as TF Serving's REST API writes it."""
    return value.decode("utf-8") if isinstance(value, bytes) else value.tolist()


def check_output(path: Path) -> None:
    """Fail before any prediction runs if `path` cannot take them: its type or its directory."""
    if path.suffix not in OUTPUT_SUFFIXES:
        raise InvalidInput(f"--output {path}: unknown file type {path.suffix!r}; valid: {', '.join(OUTPUT_SUFFIXES)}")
    if not path.parent.is_dir():
        raise InvalidInput(f"--output {path}: the directory {path.parent} does not exist")


def write_predictions(path: Path, predictions: list[dict], class_names: list[str] | None = None) -> None:
    """`predictions` as JSON lines or, for a .csv path, as a table (see the module doc)."""
    if path.suffix == ".csv":
        rows = [csv_row(prediction, class_names) for prediction in predictions]
        with atomic_file(path, newline="") as file:  # the csv module writes its own line ends
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        with atomic_file(path) as file:
            file.writelines(json.dumps(prediction, ensure_ascii=False) + "\n" for prediction in predictions)


def csv_row(prediction: dict, class_names: list[str] | None = None) -> dict:
    """A prediction as a table row: texts, the answer (label and probability, or value), then
    the other outputs; each per-class list spread over columns `<name>_<class>`, the class
    named by `class_names` (in label-id order) or, without them, by its label id."""
    first = [name for name in CSV_FIRST_COLUMNS if name in prediction]
    row = {}
    for name in first + [name for name in prediction if name not in first]:
        value = prediction[name]
        if name == "labels":
            row[name] = ",".join(value)
        elif isinstance(value, list):
            labels = class_names or range(len(value))
            row.update({f"{name}_{label}": item for label, item in zip(labels, value, strict=True)})
        else:
            row[name] = value
    return row


def _summary(prediction: dict) -> str:
    """`label<TAB>probability` for classifiers, the predicted labels for multi-label (`-`:
    none), the value for regression."""
    if "labels" in prediction:
        return ",".join(prediction["labels"]) or "-"
    if "label" in prediction:
        return f"{prediction['label']}\t{prediction['probability']:.4f}"
    return f"{prediction['value']:.4f}"


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tfbert.predict", description="Classify texts with an exported tfbert SavedModel."
    )
    parser.add_argument("export", type=Path, help="an export version dir, or the dir holding the versions")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--input", type=Path, help=f"a file of texts ({', '.join(INPUT_SUFFIXES)})")
    parser.add_argument(
        "--output", type=Path, help=f"also write the predictions to this file ({', '.join(OUTPUT_SUFFIXES)})"
    )
    parser.add_argument("--text-column", default="text", help="the --input file's text column (default: text)")
    parser.add_argument(
        "--text-pair-column", default="text_pair", help="its second text, for pair models (default: text_pair)"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="texts per model call (default: 32)")
    arguments = parser.parse_intermixed_args(argv)  # texts before or after the options
    if arguments.batch_size < 1:
        parser.error(f"--batch-size must be positive, got {arguments.batch_size}")
    if arguments.texts and arguments.input:
        parser.error("give texts as arguments or --input, not both")
    # Exports run each encoder layer as parallel branches (tfbert.packed): one thread per op.
    one_thread_per_op(cpu_cores())
    try:
        if arguments.output:
            check_output(arguments.output)
        serving, class_names = load_serving(arguments.export)
        columns = text_columns(serving)
        if arguments.input:
            names = {"text": arguments.text_column, "text_pair": arguments.text_pair_column}
            inputs = read_inputs(arguments.input, columns, names)
        elif columns == ["text"]:
            # fsencode gives back the exact bytes of the command line, even if they are not UTF-8.
            inputs = {"text": [os.fsencode(text) for text in arguments.texts]}
        else:
            raise InvalidInput(f"this model reads {columns}: give them in an --input file with those columns")
        predictions = predict(serving, inputs, arguments.batch_size, class_names)
    except (InvalidInput, OSError) as error:
        parser.error(str(error))
    for prediction in predictions:
        print("\t".join([_summary(prediction), *(repr(prediction[column][:80]) for column in columns)]))
    if arguments.output:
        try:
            write_predictions(arguments.output, predictions, class_names)
        except OSError as error:
            parser.error(f"--output {arguments.output}: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
