"""Own data end to end on the tiny model: files -> train -> evaluate -> export -> predict CLI."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from tests.conftest import ROOT, compose_config
from tests.test_files_task import TOPICS
from tfbert.train import run


@pytest.fixture(scope="module")
def three_class_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("three_class")
    names = list(TOPICS)
    rows = [(f"{TOPICS[names[i % 3]]} number {i}", names[i % 3]) for i in range(90)]
    pd.DataFrame(rows, columns=["body", "team"]).to_csv(root / "train.csv", index=False)
    cfg = compose_config(
        "model=tiny", "task=files", f"task.train_file={root / 'train.csv'}", "task.text_column=body",
        "task.label_column=team", "trainer.epochs=1", "pipeline.batch_size=16", f"run_dir={root / 'run'}",
    )
    return root / "run", run(cfg)


@pytest.fixture(scope="module")
def multi_label_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi_label")
    lines = []
    for i in range(90):
        tags = [name for j, name in enumerate(TOPICS) if (i >> j) & 1]
        lines.append(json.dumps({"text": " ".join(TOPICS[t] for t in tags) or f"nothing {i}", "tags": tags}))
    (root / "train.jsonl").write_text("\n".join(lines))
    cfg = compose_config(
        "model=tiny", "task=files", f"task.train_file={root / 'train.jsonl'}", "task.label_column=tags",
        "task.problem_type=multi_label", "trainer.epochs=1", "pipeline.batch_size=16", f"run_dir={root / 'run'}",
    )
    return root / "run", run(cfg)


def predict_cli(export, *arguments) -> tuple[list[dict], list[str]]:
    """The predictions written to --output, and the lines printed."""
    result = subprocess.run(
        [sys.executable, "-m", "tfbert.predict", str(export), *arguments, "--output", str(export.parent / "preds.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    predictions = [json.loads(line) for line in (export.parent / "preds.jsonl").read_text().splitlines()]
    return predictions, result.stdout.splitlines()


def test_three_classes(three_class_run):
    run_dir, metrics = three_class_run
    task = json.loads((run_dir / "task.json").read_text())
    assert task["label_names"] == ["politics", "science", "sports"] and task["problem_type"] == "single_label"
    assert "carved from train" in task["provenance"]["test"]
    assert len(metrics["test"]["confusion_matrix"]) == 3
    predictions, _ = predict_cli(run_dir / "export" / "files", "vote senate law", "goal match team")
    for prediction in predictions:  # the label is the most probable class, named
        assert len(prediction["probabilities"]) == 3
        assert prediction["label"] == task["label_names"][int(np.argmax(prediction["probabilities"]))]
    # the training file itself, its text in the column the task named (task.text_column=body)
    train = pd.read_csv(run_dir.parent / "train.csv")
    predictions, printed = predict_cli(run_dir / "export" / "files", "--input", run_dir.parent / "train.csv",
                                       "--text-column", "body")
    assert [prediction["text"] for prediction in predictions] == train["body"].tolist() and len(printed) == 90


def test_multi_label(multi_label_run):
    run_dir, metrics = multi_label_run
    assert set(metrics["test"]) >= {"f1_micro", "f1_macro", "subset_accuracy", "per_class"}
    texts = ["atom cell lab and vote senate law", "goal match team", "nothing"]
    predictions, printed = predict_cli(run_dir / "export" / "files", *texts)
    task = json.loads((run_dir / "task.json").read_text())
    for prediction, line, text in zip(predictions, printed, texts, strict=True):
        assert len(prediction["probabilities"]) == 3 and all(0 <= p <= 1 for p in prediction["probabilities"])
        # predicted: the classes whose probability reaches the task's threshold; labels: their names
        assert prediction["predicted"] == [p >= task["threshold"] for p in prediction["probabilities"]]
        assert prediction["labels"] == [name for name, chosen in zip(task["label_names"], prediction["predicted"]) if chosen]
        assert line == f"{','.join(prediction['labels']) or '-'}\t{text!r}"  # every predicted label, not the top one
