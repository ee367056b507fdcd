"""Loss and training metrics that follow from a task's problem type."""

import math
from collections.abc import Iterable

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
        # a probability threshold t on sigmoid(logit) is the logit threshold log(t / (1 - t))
        logit_threshold = math.log(threshold / (1 - threshold))
        return (
            tf_keras.losses.BinaryCrossentropy(from_logits=True),
            [tf_keras.metrics.BinaryAccuracy(name="accuracy", threshold=logit_threshold)],
        )
    if problem_type == "regression":
        return tf_keras.losses.MeanSquaredError(), [tf_keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"problem_type must be single_label, multi_label or regression, got {problem_type!r}")


def checkpoint_monitor(monitor: str | None, reported: Iterable[str]) -> str:
    """The validation metric that picks the best epoch.

    `monitor` when given; otherwise `val_accuracy` if the model reports accuracy
    (`reported` holds metric names or epoch-log keys), else `val_loss`.
    """
    return monitor or ("val_accuracy" if {"accuracy", "val_accuracy"} & set(reported) else "val_loss")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return metric.endswith(("loss", "mae", "mse"))
