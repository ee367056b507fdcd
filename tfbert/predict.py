"""Classify texts with an exported SavedModel; loads only tensorflow and tensorflow_text.

    python -m tfbert.predict <export> "a gripping film" "dull and long"
    python -m tfbert.predict <export> --input reviews.csv --output predictions.jsonl
    python -m tfbert.predict <export> --input reviews.csv --output predictions.csv

<export> is a version directory (`.../sentiment/1`) or the directory holding the
versions (`.../sentiment`: the highest is used). Inputs:
    .txt    one text per line (blank lines are empty texts, so lines and outputs align)
    .csv    a header row with a `text` column (and `text_pair` for pair models)
    .jsonl  one object per line with a `text` key (and `text_pair`)
Prints `label<TAB>probability<TAB>text` per text (`value<TAB>text` for regression);
--output also writes, for each text, its input texts, every output of the signature
(label, label_id, probabilities, logits, ...) and `probability`, that of label:
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

INPUT_SUFFIXES = (".txt", ".csv", ".jsonl")
OUTPUT_SUFFIXES = (".jsonl", ".csv")
CSV_FIRST_COLUMNS = ("text", "text_pair", "label", "probability", "value")


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


def read_inputs(path: Path, columns: list[str]) -> dict[str, list[bytes]]:
    """Texts of `columns` from a .txt, .csv or .jsonl file, as UTF-8 bytes."""
    if path.suffix not in INPUT_SUFFIXES:
        raise InvalidInput(f"--input {path}: unknown file type {path.suffix!r}; valid: {', '.join(INPUT_SUFFIXES)}")
    content = path.read_bytes().removeprefix(codecs.BOM_UTF8)  # as spreadsheet programs save "UTF-8"
    if path.suffix == ".txt":
        if columns != ["text"]:
            raise InvalidInput(f"--input {path}: this model reads {columns}; give a .csv or .jsonl with those columns")
        return {"text": content.splitlines()}
    text = content.decode("utf-8", errors="replace")
    if path.suffix == ".csv":
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        found = rows[0].keys() if rows else []
        missing = [column for column in columns if column not in found]
        if rows and missing:
            raise InvalidInput(f"--input {path}: no column {missing} in the header; found {list(found)}")
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise InvalidInput(f"--input {path}, line {number}: not JSON ({error})") from None
            if not isinstance(row, dict) or not all(isinstance(row.get(column), str) for column in columns):
                raise InvalidInput(f"--input {path}, line {number}: expected an object with string keys {columns}, got {line[:80]!r}")
            rows.append(row)
    return {column: [(row[column] or "").encode("utf-8") for row in rows] for column in columns}


def predict(serving, inputs: dict[str, list[bytes]], batch_size: int = 32) -> list[dict]:
    """One prediction per row of `inputs` (column -> texts), `batch_size` rows per model call.

    Each prediction holds the input texts and every output of the signature for that row,
    plus `probability`, the probability of `label`, when the model predicts labels.
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
        if isinstance(value, list):
            labels = class_names or range(len(value))
            row.update({f"{name}_{label}": item for label, item in zip(labels, value, strict=True)})
        else:
            row[name] = value
    return row


def _summary(prediction: dict) -> str:
    """`label<TAB>probability` for classifiers, the value for regression."""
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
            inputs = read_inputs(arguments.input, columns)
        elif columns == ["text"]:
            # fsencode gives back the exact bytes of the command line, even if they are not UTF-8.
            inputs = {"text": [os.fsencode(text) for text in arguments.texts]}
        else:
            raise InvalidInput(f"this model reads {columns}: give them in an --input .csv or .jsonl file")
        predictions = predict(serving, inputs, arguments.batch_size)
    except (InvalidInput, OSError) as error:
        parser.error(str(error))
    for prediction in predictions:
        print(f"{_summary(prediction)}\t{prediction['text'][:80]!r}")
    if arguments.output:
        try:
            write_predictions(arguments.output, predictions, class_names)
        except OSError as error:
            parser.error(f"--output {arguments.output}: {error}")


if __name__ == "__main__":
    main(sys.argv[1:])
