"""The predict CLI: texts or files in, labels and probabilities out, from the SavedModel alone."""

import csv
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.conftest import EXPORT_MAX_LENGTH as MAX_LENGTH, MINILM
from tfbert.predict import csv_row, find_saved_model, load_serving, main, predict


@pytest.fixture(scope="module")
def serving(export_dir):
    serving, class_names = load_serving(export_dir)
    assert class_names == ["negative", "positive"]  # the export's label_names, in label-id order
    return serving


def run_cli(capsys, *argv) -> list[str]:
    main([str(argument) for argument in argv])
    return capsys.readouterr().out.splitlines()


def test_texts_from_the_command_line(export_dir, serving, capsys):
    texts = ["a wonderful, moving film", "dull and tedious"]
    lines = run_cli(capsys, export_dir.parent, *texts)  # the model dir: its highest version is used
    outputs = serving(text=tf.constant(texts))
    expected = [
        f"{label.decode()}\t{probabilities.max():.4f}\t{text!r}"
        for label, probabilities, text in zip(outputs["label"].numpy(), outputs["probabilities"].numpy(), texts)
    ]
    assert lines == expected


INPUT_FILES = {
    "reviews.txt": "a wonderful film\ndull and tedious\n",
    "reviews.csv": 'id,text\n1,a wonderful film\n2,"dull and tedious"\n',
    "reviews.tsv": "id\ttext\n1\ta wonderful film\n2\tdull and tedious\n",
    "reviews.jsonl": '{"text": "a wonderful film", "id": 1}\n\n{"text": "dull and tedious"}\n',
    "reviews.json": '[{"text": "a wonderful film", "id": 1}, {"text": "dull and tedious"}]',
    "lines.json": '{"text": "a wonderful film", "id": 1}\n{"text": "dull and tedious"}\n',  # JSON lines in .json
}


@pytest.mark.parametrize("bom", ["", "\ufeff"], ids=["utf8", "utf8_with_bom"])  # a BOM: as spreadsheets save
@pytest.mark.parametrize("name", sorted(INPUT_FILES))
def test_input_files_to_jsonl(name, bom, export_dir, serving, capsys, tmp_path):
    source = tmp_path / name
    source.write_text(bom + INPUT_FILES[name], encoding="utf-8")
    lines = run_cli(capsys, export_dir, "--input", source, "--output", tmp_path / "predictions.jsonl")
    predictions = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [prediction["text"] for prediction in predictions] == ["a wonderful film", "dull and tedious"]
    assert len(lines) == 2
    outputs = serving(text=tf.constant(["a wonderful film", "dull and tedious"]))
    for row, prediction in enumerate(predictions):
        assert prediction["label"] == outputs["label"].numpy()[row].decode()
        np.testing.assert_allclose(prediction["probabilities"], outputs["probabilities"].numpy()[row], atol=1e-6)
        assert prediction["probability"] == max(prediction["probabilities"])
        assert prediction["label"] in ("negative", "positive")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".json", ".parquet"])
def test_a_text_column_of_another_name(suffix, export_dir, serving, capsys, tmp_path):
    """--text-column reads the column a training file named with task.text_column."""
    table = pd.DataFrame({"id": [1, 2], "review": ["a wonderful film", "dull, tedious"]})
    source = tmp_path / f"reviews{suffix}"
    {".csv": lambda: table.to_csv(source, index=False), ".tsv": lambda: table.to_csv(source, sep="\t", index=False),
     ".jsonl": lambda: table.to_json(source, orient="records", lines=True),
     ".json": lambda: table.to_json(source, orient="records"), ".parquet": lambda: table.to_parquet(source)}[suffix]()
    run_cli(capsys, export_dir, "--input", source, "--text-column", "review", "--output", tmp_path / "out.jsonl")
    predictions = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [prediction["text"] for prediction in predictions] == ["a wonderful film", "dull, tedious"]
    expected = serving(text=tf.constant(["a wonderful film", "dull, tedious"]))["probabilities"].numpy()
    np.testing.assert_allclose([prediction["probabilities"] for prediction in predictions], expected, atol=1e-6)
    with pytest.raises(SystemExit):  # without it: the file has no `text` column, and the error says how to name it
        main([str(export_dir), "--input", str(source)])
    assert "--text-column / --text-pair-column name the file's columns" in capsys.readouterr().err


@pytest.mark.parametrize("name, content", [
    ("gaps.jsonl", '{"text": "a wonderful film"}\n{"text": null}\n'),
    ("gaps.csv", "id,text\n1,a wonderful film\n2,\n"),
    ("gaps.tsv", 'id\ttext\n1\ta "wonderful" film\n2\t\n'),  # no quoting in a TSV: quotes are text
])
def test_a_missing_text_is_an_empty_one(name, content, export_dir, serving, capsys, tmp_path):
    source = tmp_path / name
    source.write_text(content)
    run_cli(capsys, export_dir, "--input", source, "--output", tmp_path / "out.jsonl")
    predictions = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    texts = [prediction["text"] for prediction in predictions]
    assert texts == ['a "wonderful" film' if name.endswith(".tsv") else "a wonderful film", ""]
    expected = serving(text=tf.constant(texts))["probabilities"].numpy()
    np.testing.assert_allclose([prediction["probabilities"] for prediction in predictions], expected, atol=1e-6)


def test_csv_output_has_a_column_per_class(export_dir, capsys, tmp_path):
    texts = ["a wonderful film", "dull, tedious"]
    run_cli(capsys, export_dir, *texts, "--output", tmp_path / "predictions.jsonl")
    run_cli(capsys, export_dir, *texts, "--output", tmp_path / "predictions.csv")
    expected = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    with (tmp_path / "predictions.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    columns = list(rows[0])
    assert columns[:3] == ["text", "label", "probability"]
    assert sorted(columns[3:]) == [
        "label_id", "logits_negative", "logits_positive", "probabilities_negative", "probabilities_positive"
    ]
    assert [row["text"] for row in rows] == texts  # the comma is quoted, not a column break
    for row, prediction in zip(rows, expected):
        assert row["label"] == prediction["label"] and int(row["label_id"]) == prediction["label_id"]
        np.testing.assert_allclose(
            [float(row["probabilities_negative"]), float(row["probabilities_positive"])], prediction["probabilities"], rtol=1e-6
        )
        assert float(row["probability"]) == pytest.approx(prediction["probability"])


def test_a_failed_write_keeps_the_previous_output_whole(export_dir, capsys, tmp_path, monkeypatch):
    output = tmp_path / "predictions.csv"
    run_cli(capsys, export_dir, "a wonderful film", "--output", output)
    before = output.read_text()

    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("tfbert.atomic.os.replace", disk_full)
    with pytest.raises(SystemExit):
        run_cli(capsys, export_dir, "dull and tedious", "--output", output)
    assert "No space left on device" in capsys.readouterr().err
    assert output.read_text() == before and [path.name for path in tmp_path.iterdir()] == ["predictions.csv"]


def test_csv_columns_of_an_export_without_class_names_are_numbered_by_label_id():
    prediction = {"text": "fine", "label": "b", "probability": 0.75, "label_id": 1, "probabilities": [0.25, 0.75]}
    assert csv_row(prediction) == {
        "text": "fine", "label": "b", "probability": 0.75, "label_id": 1, "probabilities_0": 0.25, "probabilities_1": 0.75
    }
    assert list(csv_row(prediction, ["a", "b"]))[-2:] == ["probabilities_a", "probabilities_b"]


@pytest.mark.parametrize(
    "output, message",
    [
        ("predictions.xlsx", "unknown file type '.xlsx'; valid: .jsonl, .csv"),
        ("missing/predictions.csv", "the directory .*missing does not exist"),
    ],
    ids=["unknown_suffix", "missing_directory"],
)
def test_unusable_output_fails_before_predicting(output, message, tmp_path, capsys):
    # The export does not exist either: the output is checked first, before any model loads.
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "no_export"), "fine", "--output", str(tmp_path / output)])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err.strip())
    assert not list(tmp_path.rglob("predictions.*"))


def test_bad_texts_get_defined_predictions(serving, tmp_path, capsys, export_dir):
    words = ["word"] * 50_000
    lines = [b"", b"   \t ", b"caf\xe9 \xff\xfe ok", b"caf  ok", " ".join(words).encode(), " ".join(words[: MAX_LENGTH - 2]).encode()]
    source = tmp_path / "bad.txt"
    source.write_bytes(b"\n".join(lines) + b"\n")
    output = tmp_path / "bad.jsonl"
    printed = run_cli(capsys, export_dir, "--input", source, "--output", output)
    predictions = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(printed) == len(predictions) == len(lines)
    probabilities = np.array([prediction["probabilities"] for prediction in predictions])
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    empty, blank, broken, cleaned, huge, prefix = probabilities
    np.testing.assert_allclose(blank, empty, atol=1e-6)  # both are [CLS] [SEP]
    np.testing.assert_allclose(broken, cleaned, atol=1e-6)  # bytes that are not UTF-8 are dropped
    np.testing.assert_allclose(huge, prefix, atol=1e-6)  # cut to max_length tokens
    assert predictions[2]["text"] == "caf\ufffd \ufffd\ufffd ok"
    assert len(predictions[4]["text"]) == len(" ".join(words)) > 100_000


def test_a_tsv_is_read_without_quoting_and_a_file_not_in_utf8_is_named(export_dir, capsys, tmp_path):
    source = tmp_path / "quotes.tsv"
    texts = ['"Great" but long', '"unbalanced', "plain", 'caf\xe9 cr\xe8me']
    source.write_bytes(("id\ttext\n" + "".join(f"{i}\t{text}\n" for i, text in enumerate(texts))).encode("latin-1"))
    main([str(export_dir), "--input", str(source), "--output", str(tmp_path / "out.jsonl")])
    predictions = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [prediction["text"] for prediction in predictions] == [*texts[:3], "caf\ufffd cr\ufffdme"]
    assert f"warning: --input {source}, line 5: bytes b'\\xe9' are not UTF-8" in capsys.readouterr().err


def test_non_utf8_command_line_bytes(export_dir, capsys, tmp_path):
    output = tmp_path / "argv.jsonl"
    # "\udcff\udcfe": how Python decodes argv bytes that are not UTF-8; they are dropped, as in files
    lines = run_cli(capsys, export_dir, "--output", output, "ok \udcff\udcfe fine", "ok  fine", "ok ? fine")  # texts after options too
    broken, cleaned, replaced = [json.loads(line)["probabilities"] for line in output.read_text().splitlines()]
    assert len(lines) == 3
    np.testing.assert_allclose(broken, cleaned, atol=1e-6)
    assert np.abs(np.array(replaced) - cleaned).max() > 1e-6  # a token in their place would show


def test_batches_do_not_change_predictions(serving):
    texts = [text.encode() for text in ["short", "a much longer sentence with many more words in it", "", "mid length text"]]
    one_batch = predict(serving, {"text": texts}, batch_size=32)
    small_batches = predict(serving, {"text": texts}, batch_size=1)
    for a, b in zip(one_batch, small_batches):
        np.testing.assert_allclose(a["probabilities"], b["probabilities"], atol=1e-5)


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (None, None, "no texts to classify"),
        ("", ".txt", "no texts to classify"),
        ("id,review\n1,great\n", ".csv", r"no column \['text'\] in the header; found \['id', 'review'\]"),
        ('{"text": "fine"}\nnot json\n', ".jsonl", "line 2: not JSON"),
        ('{"text": 3}\n', ".jsonl", r"line 1: expected an object with string \(or null\) keys \['text'\], got {\"text\": 3}$"),
        ('{"text": "fine"}\n{"review": "fine"}\n', ".jsonl", r"line 2: no key \['text'\]; found \['review'\] \(--text-column"),
        ('[{"text": "fine"}, "not an object"]', ".json", "item 2: expected an object with string"),
        ('id,text\n1,fine\n2,"never closed\n3,swallowed\n', ".csv", "line 3: a quoted field is never closed"),
        ('[{"text": "fine"},', ".json", "not JSON"),
        ("not parquet", ".parquet", "not a Parquet file"),
        ("great\n", ".xml", "unknown file type '.xml'; valid: .txt, .csv, .tsv, .jsonl, .json, .parquet"),
    ],
    ids=["no_arguments", "empty_file", "csv_without_text", "jsonl_not_json", "jsonl_number", "jsonl_no_key", "json_array_item",
         "csv_unclosed_quote",
         "json_array_cut", "not_parquet", "unknown_suffix"],
)
def test_unusable_input_is_a_clear_error(content, suffix, message, export_dir, tmp_path, capsys):
    argv = [str(export_dir)]
    if content is not None:
        source = tmp_path / f"input{suffix}"
        source.write_text(content)
        argv += ["--input", str(source)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err.strip())


def test_find_saved_model_takes_the_highest_version(export_dir, tmp_path):
    for version in ("2", "10"):
        shutil.copytree(export_dir, tmp_path / version)
    (tmp_path / "11").mkdir()  # no saved_model.pb: not a version
    assert find_saved_model(tmp_path) == tmp_path / "10"
    assert find_saved_model(tmp_path / "2") == tmp_path / "2"


CLI_IMPORTS = """
import sys
from tfbert.predict import main
main(sys.argv[1:])
heavy = sorted(name for name in sys.modules if name.split(".")[0] == "transformers" or name.startswith("tfbert.") and name not in ("tfbert.predict", "tfbert.env", "tfbert.threads", "tfbert.atomic"))
import tensorflow as tf
print("intra-op threads:", tf.config.threading.get_intra_op_parallelism_threads())
print("heavy:", heavy)
"""


def test_cli_needs_no_transformers_nor_model_code(export_dir, tmp_path):
    """In a process of its own, it also serves with one thread per op (the export's branches run in parallel)."""
    result = subprocess.run(
        [sys.executable, "-c", CLI_IMPORTS, str(export_dir), "a wonderful film"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    label, probability, text = result.stdout.splitlines()[0].split("\t")
    assert label in ("negative", "positive") and 0.5 <= float(probability) <= 1 and text == "'a wonderful film'"
    assert result.stdout.splitlines()[-2:] == ["intra-op threads: 1", "heavy: []"]


def test_a_pair_models_lines_show_both_texts(classifier, capsys, tmp_path):
    from tfbert.export import export_classifier
    from tfbert.tasks.files import load_files

    rows = [(f"premise {i}", f"hypothesis {i}", ["yes", "no"][i % 2]) for i in range(40)]
    pd.DataFrame(rows, columns=["premise", "hypothesis", "label"]).to_csv(tmp_path / "pairs.csv", index=False)
    task = load_files(str(tmp_path / "pairs.csv"), text_column="premise", text_pair_column="hypothesis")
    export = export_classifier(classifier, task, MINILM, tmp_path / "run")
    pd.DataFrame({"text": ["a cat sat"], "text_pair": ["an animal sat"]}).to_csv(tmp_path / "inputs.csv", index=False)
    (line,) = run_cli(capsys, export, "--input", tmp_path / "inputs.csv")
    label, probability, text, text_pair = line.split("\t")
    assert label in ("yes", "no") and 0.5 <= float(probability) <= 1
    assert (text, text_pair) == ("'a cat sat'", "'an animal sat'")
