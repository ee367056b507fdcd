"""Keras fit with the callbacks a fine-tuning run needs: TensorBoard and the best checkpoint."""

import sys
from pathlib import Path

import tensorflow as tf
import tf_keras


class Trainer:
    """Compiles and fits a classifier, then restores its best validation checkpoint.

    Args:
        epochs: passes over the training split.
        monitor: validation metric that picks the best checkpoint (`val_accuracy`,
            `val_loss`, ...); None: `val_accuracy` when the model reports accuracy, else `val_loss`.
        jit_compile: compile train/eval steps with XLA.
        steps_per_execution: batches run per tf.function call (fewer Python round trips).
        tensorboard_update_freq: log training scalars every this many batches, or `epoch`.
    """

    def __init__(
        self,
        epochs: int = 3,
        monitor: str | None = None,
        jit_compile: bool = False,
        steps_per_execution: int = 1,
        tensorboard_update_freq: int | str = 50,
    ):
        if epochs < 1:
            raise ValueError(f"epochs must be positive, got {epochs}")
        if monitor is not None and not monitor.startswith("val_"):
            raise ValueError(f"monitor must name a validation metric such as val_accuracy, got {monitor!r}")
        self.epochs = epochs
        self.monitor = monitor
        self.jit_compile = jit_compile
        self.steps_per_execution = steps_per_execution
        self.tensorboard_update_freq = tensorboard_update_freq

    def fit(
        self,
        model: tf_keras.Model,
        optimizer: tf_keras.optimizers.Optimizer,
        loss: tf_keras.losses.Loss,
        metrics: list,
        train_data: tf.data.Dataset,
        validation_data: tf.data.Dataset,
        run_dir: Path,
        callbacks: list = (),
        class_weight: dict[int, float] | None = None,
    ) -> tf_keras.callbacks.History:
        """Train; afterwards `model` holds the weights of the best validation epoch.

        `loss` and `metrics` fit the task's problem type; `callbacks` run after the
        trainer's own (TensorBoard, best checkpoint); `class_weight` weights each
        class id's loss.
        """
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            jit_compile=self.jit_compile,
            steps_per_execution=self.steps_per_execution,
        )
        best = Path(run_dir) / "checkpoints" / "best"
        monitor = self.monitor or (
            "val_accuracy" if any(metric.name == "accuracy" for metric in metrics) else "val_loss"
        )
        mode = "min" if monitor.endswith(("loss", "mae", "mse")) else "max"
        callbacks = [
            *callbacks,
            tf_keras.callbacks.TensorBoard(
                log_dir=str(Path(run_dir) / "tensorboard"), update_freq=self.tensorboard_update_freq
            ),
            tf_keras.callbacks.ModelCheckpoint(
                str(best), monitor=monitor, mode=mode, save_best_only=True, save_weights_only=True
            ),
        ]
        history = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=self.epochs,
            callbacks=callbacks,
            class_weight=class_weight,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        model.load_weights(str(best)).expect_partial()
        return history
