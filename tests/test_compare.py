"""tfbert.compare on a fabricated multirun dir: grouping, mean ± std, CSV, chart, errors."""

import csv
import json
import statistics

import pytest
import yaml

from tfbert.compare import NoRuns, compare, main

# head -> test accuracy of seeds 1, 2, 3
ACCURACY = {"pooler": [0.80, 0.82, 0.84], "mean": [0.70, 0.75, 0.80]}


def fake_run(multirun_dir, number, overrides, metrics=None):
    run_dir = multirun_dir / f"{number}_{','.join(overrides)}"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def fake_metrics(accuracy, seconds):
    scores = {"accuracy": accuracy, "f1_macro": accuracy - 0.1, "precision_macro": 0.5, "recall_macro": 0.5}
    return {"validation": scores, "test": scores, "train_seconds": seconds}


@pytest.fixture
def multirun_dir(tmp_path):
    number = 0
    for head, accuracies in ACCURACY.items():
        for seed, accuracy in enumerate(accuracies, start=1):
            fake_run(tmp_path, number, ["model=tiny", f"head={head}", f"seed={seed}"],
                     fake_metrics(accuracy, seconds=10.0 * seed))
            number += 1
    return tmp_path


def test_table_has_mean_and_std_per_head(multirun_dir):
    paths = compare(multirun_dir)
    table = paths["md"].read_text().splitlines()
    assert table[0] == (
        "| head | runs | test accuracy | test macro F1 | test macro precision | test macro recall | training seconds |"
    )
    pooler = statistics.mean(ACCURACY["pooler"]), statistics.stdev(ACCURACY["pooler"])
    assert table[2].startswith(f"| pooler | 3 | {pooler[0]:.4f} ± {pooler[1]:.4f} |")
    assert table[3].startswith("| mean | 3 | 0.7500 ± 0.0500 | 0.6500 ± 0.0500 |")
    assert table[3].endswith("| 20.0 ± 10.0 |")


def test_csv_holds_the_numbers(multirun_dir):
    paths = compare(multirun_dir)
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [row["head"] for row in rows] == ["pooler", "mean"]
    mean = rows[1]
    assert float(mean["test accuracy mean"]) == pytest.approx(0.75)
    assert float(mean["test accuracy std"]) == pytest.approx(0.05)
    assert float(mean["training seconds mean"]) == pytest.approx(20.0)
    assert int(mean["runs"]) == int(mean["test accuracy runs"]) == 3


def test_chart_is_a_png(multirun_dir):
    png = compare(multirun_dir)["png"]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_a_regression_sweep_compares_correlations(tmp_path):
    pearson = {"pooler": [0.60, 0.70], "mean": [-0.10, 0.10]}  # a correlation may be negative
    for number, (head, seed) in enumerate((head, seed) for head in pearson for seed in (1, 2)):
        scores = {"mse": 1.0, "mae": 0.8, "pearson": pearson[head][seed - 1], "spearman": 0.5}
        fake_run(tmp_path, number, ["task=sentiment_valence", f"head={head}", f"seed={seed}"],
                 {"validation": scores, "test": scores, "train_seconds": 5.0})
    paths = compare(tmp_path)
    table = paths["md"].read_text().splitlines()
    assert table[0] == "| head | runs | test Pearson r | test Spearman rho | test MSE | training seconds |"
    assert table[2].startswith("| pooler | 2 | 0.6500 ± 0.0707 | 0.5000 ± 0.0000 | 1.0000 ± 0.0000 |")
    assert table[3].startswith("| mean | 2 | 0.0000 ± 0.1414 |")
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_a_seed_with_undefined_correlations_leaves_the_others_mean(tmp_path):
    """A run whose test predictions were constant has no Pearson r or Spearman rho (null in
    metrics.json): its group's mean is over its other runs, and says so."""
    pearson = {"pooler": [0.60, 0.70, None], "mean": [None, None]}
    number = 0
    for head, scores in pearson.items():
        for seed, score in enumerate(scores, start=1):
            test = {"mse": 1.0, "mae": 0.8, "pearson": score, "spearman": score}
            fake_run(tmp_path, number, [f"head={head}", f"seed={seed}"], {"test": test, "train_seconds": 5.0})
            number += 1
    paths = compare(tmp_path)
    table = paths["md"].read_text().splitlines()
    assert table[2].startswith("| pooler | 3 | 0.6500 ± 0.0707 (2 of 3) | 0.6500 ± 0.0707 (2 of 3) | 1.0000 ± 0.0000 |")
    assert table[3].startswith("| mean | 2 | – | – | 1.0000 ± 0.0000 |")
    assert "the mean of the k runs whose score is defined" in table[-1]
    with paths["csv"].open(newline="") as file:
        rows = {row["head"]: row for row in csv.DictReader(file)}
    assert rows["pooler"]["test Pearson r runs"] == "2" and rows["pooler"]["runs"] == "3"
    assert float(rows["pooler"]["test Pearson r mean"]) == pytest.approx(0.65)
    assert rows["mean"]["test Pearson r mean"] == "" and rows["mean"]["test MSE runs"] == "2"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_a_sweep_over_problem_types_keeps_each_types_metrics(tmp_path):
    """Classification and regression runs side by side: each group fills the columns its
    metrics have, the others are blank ("–" in the table, empty in the CSV)."""
    fake_run(tmp_path, 0, ["task=sentiment", "seed=1"], fake_metrics(0.8, seconds=10.0))
    regression = {"mse": 1.0, "mae": 0.8, "pearson": 0.6, "spearman": 0.5}
    fake_run(tmp_path, 1, ["task=sentiment_valence", "seed=1"], {"validation": regression, "test": regression, "train_seconds": 5.0})
    paths = compare(tmp_path)
    table = paths["md"].read_text().splitlines()
    assert "test accuracy" in table[0] and "test Pearson r" in table[0]
    columns = table[0].strip("| ").split(" | ")
    sentiment, valence = (dict(zip(columns, line.strip("| ").split(" | "))) for line in table[2:4])
    assert sentiment["test accuracy"] == "0.8000" and sentiment["test Pearson r"] == "–"
    assert valence["test accuracy"] == "–" and valence["test Pearson r"] == "0.6000"
    with paths["csv"].open(newline="") as file:
        rows = {row["task"]: row for row in csv.DictReader(file)}
    assert rows["sentiment_valence"]["test accuracy mean"] == "" and rows["sentiment"]["test accuracy mean"] == "0.8"
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_group_by_another_override_and_single_runs(multirun_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    paths = compare(multirun_dir, by=["head", "seed"], out_dir=out)
    table = paths["md"].read_text().splitlines()
    assert len(table) == 2 + 6
    assert table[2].startswith("| pooler | 1 | 1 | 0.8000 |")  # one run: no std
    assert paths["md"].parent == out


def test_unfinished_runs_are_skipped(multirun_dir):
    fake_run(multirun_dir, 99, ["model=tiny", "head=cls", "seed=1"])  # no metrics.json
    table = compare(multirun_dir)["md"].read_text()
    assert "| cls |" not in table


def test_dir_without_runs_says_what_was_expected(tmp_path, capsys):
    with pytest.raises(NoRuns, match="expected subdirectories like 0_head=pooler,seed=1/"):
        compare(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_single_run_is_not_a_sweep(tmp_path):
    fake_run(tmp_path, 0, ["head=mean"], fake_metrics(0.8, 5.0))
    with pytest.raises(NoRuns, match=r"holds one run \(.*0_head=mean\); compare takes the dir of a sweep"):
        compare(tmp_path)


def test_unknown_group_key_lists_the_overrides(multirun_dir):
    with pytest.raises(NoRuns, match="overrides found: head, model, seed"):
        compare(multirun_dir, by=["dropout"])


def test_runs_whose_overrides_hold_paths(tmp_path):
    # Hydra names the run dir after its overrides, so a path override nests it.
    for number, head in enumerate(["pooler", "mean"]):
        fake_run(tmp_path, number, [f"head={head}", "task.data_file=/data/reviews.txt"], fake_metrics(0.8, 5.0))
    assert (tmp_path / "0_head=pooler,task.data_file=" / "data").is_dir()
    table = compare(tmp_path)["md"].read_text()
    assert "| pooler | 1 | 0.8000 |" in table and "| mean | 1 | 0.8000 |" in table


def test_a_multi_label_sweep_compares_subset_accuracy_and_micro_scores(tmp_path):
    for number, (head, seed) in enumerate((head, seed) for head in ("pooler", "mean") for seed in (1, 2)):
        scores = {"subset_accuracy": 0.5 + 0.1 * seed, "f1_micro": 0.7, "f1_macro": 0.6, "precision_micro": 0.8,
                  "recall_micro": 0.6, "threshold": 0.5}
        fake_run(tmp_path, number, ["task=files", f"head={head}", f"seed={seed}"],
                 {"validation": scores, "test": scores, "train_seconds": 5.0})
    table = compare(tmp_path)["md"].read_text().splitlines()
    assert table[0] == ("| head | runs | test macro F1 | test subset accuracy | test micro F1 | test micro precision | "
                        "test micro recall | training seconds |")
    assert table[2].startswith("| pooler | 2 | 0.6000 ± 0.0000 | 0.6500 ± 0.0707 | 0.7000 ± 0.0000 |")
