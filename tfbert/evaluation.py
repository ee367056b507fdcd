"""Metrics of a trained classifier on one split."""

import numpy as np
import tensorflow as tf
import tf_keras
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support


def predict(model: tf_keras.Model, dataset: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), logits (n, classes)) over one pass of a batched dataset."""
    labels, logits = [], []
    for features, label in dataset:
        labels.append(label.numpy())
        logits.append(model(features, training=False).numpy())
    return np.concatenate(labels), np.concatenate(logits)


def classification_metrics(labels: np.ndarray, logits: np.ndarray, label_names) -> dict:
    """Accuracy, macro precision/recall/F1, per-class scores and the confusion matrix."""
    predicted = logits.argmax(axis=-1)
    classes = list(range(len(label_names)))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=classes, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(f1.mean()),
        "precision_macro": float(precision.mean()),
        "recall_macro": float(recall.mean()),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(label_names)
        },
        # rows: true label, columns: predicted label, both in label_names order
        "confusion_matrix": confusion_matrix(labels, predicted, labels=classes).tolist(),
        "examples": int(len(labels)),
    }


def evaluate(model: tf_keras.Model, dataset: tf.data.Dataset, label_names) -> dict:
    """classification_metrics of `model` on `dataset`."""
    return classification_metrics(*predict(model, dataset), label_names)
