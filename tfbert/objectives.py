"""Loss and training metrics that follow from a task's problem type."""

import math
from collections.abc import Iterable

import tensorflow as tf
import tf_keras


def loss_and_metrics(problem_type: str, threshold: float = 0.5) -> tuple[tf_keras.losses.Loss, list]:
    """(loss on logits, Keras metrics) for `single_label`, `multi_label` or `regression`.

    The model always outputs raw logits (or the raw regression value); softmax and
    sigmoid live in the loss here and in the serving signature.
    """
    if problem_type == "single_label":
        return (
            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            [tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    if problem_type == "multi_label":
        return tf_keras.losses.BinaryCrossentropy(from_logits=True), [label_accuracy(threshold)]
    if problem_type == "regression":
        return tf_keras.losses.MeanSquaredError(), [tf_keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"problem_type must be single_label, multi_label or regression, got {problem_type!r}")


def label_accuracy(threshold: float) -> tf_keras.metrics.Metric:
    """Multi-label `accuracy`: the share of (example, class) decisions right, a class
    predicted where its probability >= threshold, as tfbert.evaluation and the export decide
    (Keras' BinaryAccuracy decides by >)."""
    # a probability threshold t on sigmoid(logit) is the logit threshold log(t / (1 - t))
    logit_threshold = math.log(threshold / (1 - threshold))

    def accuracy(labels, logits):
        predicted = tf.cast(logits >= logit_threshold, logits.dtype)
        return tf.reduce_mean(tf.cast(tf.equal(tf.cast(labels, logits.dtype), predicted), tf.float32), axis=-1)

    return tf_keras.metrics.MeanMetricWrapper(accuracy, name="accuracy")


def checkpoint_monitor(monitor: str | None, reported: Iterable[str]) -> str:
    """The validation metric that picks the best epoch.

    `monitor` when given; otherwise `val_accuracy` if the model reports accuracy
    (`reported` holds metric names or epoch-log keys), else `val_loss`.
    """
    return monitor or ("val_accuracy" if {"accuracy", "val_accuracy"} & set(reported) else "val_loss")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return metric.endswith(("loss", "mae", "mse"))


class BestEpoch:
    """Which epoch is best by a validation metric: the one rule the best checkpoint, the
    HParams dashboard and the projector follow.

    Args:
        monitor: e.g. `val_accuracy`; None: checkpoint_monitor's default.
        best: the best value so far (a resumed run's, from best.json); None: no epoch yet.
    """

    def __init__(self, monitor: str | None, best: float | None = None):
        self.monitor = monitor
        self.best = best

    def update(self, logs: dict) -> bool:
        """Whether the epoch with these logs is the best so far (a NaN or inf value never is)."""
        monitor = checkpoint_monitor(self.monitor, logs)
        value = logs.get(monitor)
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or (value < self.best if lower_is_better(monitor) else value > self.best):
            self.best = float(value)
            return True
        return False
