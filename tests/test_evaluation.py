"""Regression metrics and the score a hyperparameter sweep maximizes."""

import numpy as np
import pytest

from tfbert.evaluation import regression_metrics, sweep_objective


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
