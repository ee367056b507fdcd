"""Regression metrics and the score a hyperparameter sweep maximizes."""

import numpy as np
import pytest

from tfbert.evaluation import classification_metrics, multi_label_metrics, regression_metrics, sweep_objective
from tfbert.objectives import loss_and_metrics
from tfbert.report import run_summary


def test_regression_metrics_score_predictions_against_targets():
    metrics = regression_metrics(np.array([0.0, 1.0, 2.0, 3.0]), np.array([[0.5], [1.0], [2.0], [2.5]]))
    assert metrics["mse"] == (0.25 + 0 + 0 + 0.25) / 4 and metrics["mae"] == 0.25
    pearson = np.corrcoef([0.0, 1.0, 2.0, 3.0], [0.5, 1.0, 2.0, 2.5])[0, 1]
    assert metrics["pearson"] == pytest.approx(pearson) and metrics["spearman"] == 1.0 and metrics["examples"] == 4


def test_constant_predictions_have_no_correlation_and_score_zero_in_a_sweep():
    metrics = regression_metrics(np.array([0.0, 1.0, 2.0]), np.full((3, 1), 1.5))
    assert metrics["pearson"] is None and metrics["spearman"] is None
    assert sweep_objective(metrics) == 0.0  # a float the Optuna sweeper can record


def test_sweep_objective_is_macro_f1_for_classification_and_pearson_for_regression():
    assert sweep_objective({"accuracy": 0.9, "f1_macro": 0.8}) == 0.8
    assert sweep_objective({"mse": 0.5, "pearson": 0.7}) == 0.7


def test_macro_averages_leave_out_a_class_the_split_lacks():
    """A class no example holds and none is predicted as has no score: it does not pull
    the macro averages down (its per-class row stays, with support 0)."""
    perfect = classification_metrics(np.array([0, 1, 0, 1]), np.eye(3)[[0, 1, 0, 1]], ["a", "b", "c"])
    assert perfect["f1_macro"] == perfect["precision_macro"] == perfect["recall_macro"] == 1.0
    assert perfect["per_class"]["c"]["support"] == 0
    # predicted as the absent class, it counts: its precision is 0
    wrong = classification_metrics(np.array([0, 1, 0, 1]), np.eye(3)[[0, 1, 0, 2]], ["a", "b", "c"])
    assert wrong["precision_macro"] == pytest.approx((1 + 1 + 0) / 3)
    multi = multi_label_metrics(np.array([[1, 0, 0], [0, 1, 0]]), np.array([[5.0, -5.0, -5.0], [-5.0, 5.0, -5.0]]),
                                ["a", "b", "c"], threshold=0.5)
    assert multi["f1_macro"] == 1.0


def test_multi_label_accuracy_decides_as_the_evaluation_does():
    """Training's accuracy counts a class predicted at probability >= threshold, as
    multi_label_metrics and the export do: a logit exactly on the threshold is predicted."""
    labels, logits = np.array([[1.0, 0.0]]), np.array([[0.0, -3.0]])  # sigmoid(0) = 0.5
    _, [accuracy] = loss_and_metrics("multi_label", threshold=0.5)
    accuracy.update_state(labels, logits)
    assert float(accuracy.result()) == 1.0
    assert multi_label_metrics(labels, logits, ["a", "b"], threshold=0.5)["subset_accuracy"] == 1.0


def test_the_summary_lists_the_scores_and_na_for_undefined_ones():
    constant = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 2.0]))
    varied = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.1, 2.2, 2.9]))
    summary = run_summary({"test": {**constant, "examples": 3}, "validation": varied, "train_seconds": 1.0}, "run", "export")
    rows = {line.split()[0]: line.split()[1:] for line in summary.splitlines()[2:6]}
    assert set(rows) == {"mse", "mae", "pearson", "spearman"}
    assert rows["pearson"][0] == "n/a" and rows["pearson"][1] == f"{varied['pearson']:.4f}"
    multi = multi_label_metrics(np.array([[1, 0]]), np.array([[2.0, -2.0]]), ["a", "b"], threshold=0.5)
    summary = run_summary({"test": multi, "validation": multi, "train_seconds": 1.0}, "run", "export")
    assert "threshold" not in summary and "subset_accuracy" in summary
