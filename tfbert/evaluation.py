"""Metrics of a trained model on one split, for each problem type."""

import numpy as np
import tensorflow as tf
import tf_keras
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)


def predict(model: tf_keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels, model outputs (n, outputs)) over one pass of a batched dataset."""
    labels = np.concatenate([label.numpy() for _, label in dataset])
    # Keras' compiled predict step (it ignores the labels): about twice as fast as eager calls.
    return labels, model.predict(dataset, verbose=0)


def _per_class(precision, recall, f1, support, label_names) -> dict:
    return {
        name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
               "support": int(support[i])}
        for i, name in enumerate(label_names)
    }


def classification_metrics(labels: np.ndarray, logits: np.ndarray, label_names) -> dict:
    """Single-label: accuracy, macro precision/recall/F1, per-class scores, confusion matrix.

    The macro averages are over the classes the labels or predictions hold (as scikit-learn's
    own): a class a split lacks and no example is predicted as has no score to average.
    """
    predicted = logits.argmax(axis=-1)
    classes = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    present = np.isin(classes, np.union1d(labels, predicted))
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(f1[present].mean()),
        "precision_macro": float(precision[present].mean()),
        "recall_macro": float(recall[present].mean()),
        "per_class": _per_class(precision, recall, f1, support, label_names),
        # rows: true label, columns: predicted label, both in label_names order
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "examples": int(len(labels)),
    }


def multi_label_metrics(labels: np.ndarray, logits: np.ndarray, label_names, threshold: float) -> dict:
    """Multi-label: micro/macro F1, subset accuracy, per-class scores at `threshold`.

    The macro F1 is over the classes some example holds or is predicted to hold.
    """
    predicted = (1 / (1 + np.exp(-logits)) >= threshold).astype(int)
    truth = labels.astype(int)
    micro = precision_recall_fscore_support(truth, predicted, average="micro", zero_division=0)
    precision, recall, f1, support = precision_recall_fscore_support(truth, predicted, zero_division=0)
    present = (truth | predicted).any(axis=0)
    return {
        "subset_accuracy": float(accuracy_score(truth, predicted)),
        "f1_micro": float(micro[2]),
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
        "precision_micro": float(micro[0]),
        "recall_micro": float(micro[1]),
        "per_class": _per_class(precision, recall, f1, support, label_names),
        "threshold": threshold,
        "examples": int(len(labels)),
    }


def regression_metrics(targets: np.ndarray, outputs: np.ndarray) -> dict:
    """Regression: MSE, MAE, Pearson and Spearman correlation."""
    predicted = outputs.reshape(-1)
    constant = np.ptp(predicted) == 0 or np.ptp(targets) == 0  # correlation undefined
    return {
        "mse": float(mean_squared_error(targets, predicted)),
        "mae": float(mean_absolute_error(targets, predicted)),
        "pearson": None if constant else float(pearsonr(targets, predicted)[0]),
        "spearman": None if constant else float(spearmanr(targets, predicted)[0]),
        "examples": int(len(targets)),
    }


def sweep_objective(validation: dict) -> float:
    """What hparams_search=optuna maximizes: macro F1, or Pearson r for regression tasks.

    A regression run whose predictions are constant has no correlation (metrics.json says
    null); it scores 0.0 here, as useless as uncorrelated predictions, so the sampler learns
    from the trial and the sweep goes on (None or NaN would stop the hydra-optuna-sweeper).
    """
    score = validation["f1_macro"] if "f1_macro" in validation else validation["pearson"]
    return 0.0 if score is None else score


def evaluate(
    model: tf_keras.Model,
    dataset: tf.data.Dataset,
    label_names,
    problem_type: str = "single_label",
    threshold: float = 0.5,
) -> dict:
    """The metrics of `model` on `dataset` that fit `problem_type`."""
    labels, outputs = predict(model, dataset)
    if problem_type == "multi_label":
        return multi_label_metrics(labels, outputs, label_names, threshold)
    if problem_type == "regression":
        return regression_metrics(labels, outputs)
    return classification_metrics(labels, outputs, label_names)
