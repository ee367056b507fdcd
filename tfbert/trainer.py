"""Keras fit with what a fine-tuning run needs: TensorBoard, the best checkpoint, resume."""

import logging
import math
import sys
from pathlib import Path

import tensorflow as tf
import tf_keras

from tfbert.checkpoints import Backup, BestCheckpoint, Preempted, backup_position, best_checkpoint, best_so_far
from tfbert.checks import ConfigError, check_flags, is_whole_number
from tfbert.objectives import checkpoint_monitor, lower_is_better
from tfbert.pipeline import stream_epochs
from tfbert.precision import resolve_precision
from tfbert.run_dir import check_run_dir
from tfbert.threads import cpu_cores, one_thread_per_op

log = logging.getLogger(__name__)
RESUME = ("auto", "never")
# parallel_slices=auto: one slice per core up to this many (measured: 2 cores, bench/results/speed.md).
MAX_AUTO_SLICES = 8


class NonFiniteLoss(RuntimeError):
    """Training stopped because the loss became NaN or infinite."""


class StopOnNonFiniteLoss(tf_keras.callbacks.Callback):
    """Stops training at the first NaN/inf loss and remembers where it happened."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.stopped_at = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and self.stopped_at is None:
            self.stopped_at = (self.epoch + 1, batch + 1)
            self.model.stop_training = True


class ResumableEarlyStopping(tf_keras.callbacks.EarlyStopping):
    """EarlyStopping that a resumed run continues where the stopped one was: its best value
    and the epochs waited since come from the run's best epoch so far (`best`: best.json)
    and the `epochs_done` before this process; an epoch cut short (SIGTERM, Ctrl-C, NaN) has
    no validation and does not count. `stopped_before`: the run had already stopped early.
    A best epoch later than the backup (a crash after its best checkpoint, before its
    backup) is trained again: it waits -1 epochs, so that its repeat, no improvement on
    itself, brings the count to 0."""

    def __init__(self, monitor: str, patience: int, mode: str, best: dict | None = None, epochs_done: int = 0):
        super().__init__(monitor, patience=patience, mode=mode)
        self.best_before, self.epochs_done = (best if epochs_done else None), epochs_done
        # Keras stops when `patience` epochs in a row after the first did not improve.
        self.stopped_before = bool(self.best_before) and epochs_done > 1 and epochs_done - best["epoch"] >= patience

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.best_before:
            self.best, self.best_epoch = self.best_before["value"], self.best_before["epoch"] - 1
            self.wait = self.epochs_done - self.best_before["epoch"]

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training:  # a cut-short epoch: no val_* to compare, nothing to count
            super().on_epoch_end(epoch, logs)


class EpochTensorBoard(tf_keras.callbacks.TensorBoard):
    """Keras' TensorBoard callback without epoch scalars for an epoch cut short (SIGTERM,
    Ctrl-C, a NaN loss): the resumed run logs that epoch, and TensorBoard would show both.
    It must come before a callback that stops training at an epoch's end (EarlyStopping)."""

    def on_epoch_end(self, epoch, logs=None):
        if not self.model.stop_training:
            super().on_epoch_end(epoch, logs)


def resolve_parallel_slices(parallel_slices: int | str, strategy: str, jit_compile: bool) -> int:
    """The number of slices `parallel_slices` (a positive int or `auto`) means here (see Trainer)."""
    if parallel_slices == "auto":
        accelerated = tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU")
        if accelerated or strategy != "default" or jit_compile:
            return 1
        return min(cpu_cores(), MAX_AUTO_SLICES)
    if not is_whole_number(parallel_slices, 1):
        raise ValueError(f"parallel_slices must be a positive integer or auto, got {parallel_slices!r}")
    return parallel_slices


class Trainer:
    """Compiles and fits a classifier, then restores its best validation checkpoint.

    Args:
        epochs: passes over the training split.
        monitor: validation metric that picks the best checkpoint (`val_accuracy`,
            `val_loss`, ...); None: `val_accuracy` when the model reports accuracy, else `val_loss`.
        early_stopping_patience: stop once `monitor` has not improved for this many
            epochs (the best checkpoint is restored as always); None: train every epoch.
            A resumed run continues the count from its best epoch so far (best.json).
        jit_compile: compile train/eval steps with XLA.
        steps_per_execution: batches run per tf.function call (fewer Python round trips).
        tensorboard_update_freq: log training scalars every this many batches, or `epoch`.
        resume: `auto` continues from `<run_dir>/backup` when a previous run of the same
            run_dir left one (crash, SIGTERM, Ctrl-C); `never` refuses to start over such a backup.
        backup_every_steps: how often the backup is refreshed.
        deterministic: TensorFlow op determinism (same seed, same machine: identical runs).
        strategy: the tf.distribute strategy `tfbert.distribute.build_strategy` makes:
            `default`, `one_device`, `mirrored`, `multi_worker` or `tpu`. The model must be
            built in its scope; `pipeline.batch_size` is then the global batch.
        tpu: for strategy `tpu`: None for a Cloud TPU VM's own TPU, else a TPU node's
            name or grpc://host:port address.
        precision: `auto` (16-bit compute where the hardware has it natively: see
            tfbert.precision), `float32`, `mixed_float16` (with dynamic loss scaling) or
            `mixed_bfloat16`. Logits and loss stay float32. `self.precision` is the policy
            chosen.
        grad_accum_steps: apply the mean gradient of this many batches at once (a
            larger effective batch without the memory; see tfbert.classifier.Classifier);
            with any strategy but `tpu`.
        profile_steps: `[first, last]` training steps to trace for TensorBoard's profiler.
        parallel_slices: run each batch as this many slices side by side (see
            tfbert.classifier.Classifier), with one thread per op and as many ops at once
            as there are slices or cores (set here: build the Trainer before TensorFlow's
            runtime starts); 1: the whole batch, each op on every core. `auto`: one slice
            per core (at most MAX_AUTO_SLICES) when training on a CPU with the default
            strategy and without XLA, else 1. `self.parallel_slices` is the number chosen.
    """

    def __init__(
        self,
        epochs: int = 2,
        monitor: str | None = None,
        early_stopping_patience: int | None = None,
        jit_compile: bool = False,
        steps_per_execution: int = 1,
        tensorboard_update_freq: int | str = 50,
        resume: str = "auto",
        backup_every_steps: int = 100,
        deterministic: bool = False,
        strategy: str = "default",
        tpu: str | None = None,
        precision: str = "auto",
        grad_accum_steps: int = 1,
        profile_steps: list[int] | None = None,
        parallel_slices: int | str = 1,
    ):
        if not is_whole_number(epochs, 1):
            raise ValueError(f"epochs must be a positive integer, got {epochs!r}")
        check_flags(jit_compile=jit_compile, deterministic=deterministic)
        if monitor is not None and not (isinstance(monitor, str) and monitor.startswith("val_")):
            raise ValueError(f"monitor must name a validation metric such as val_accuracy, got {monitor!r}")
        if early_stopping_patience is not None and not is_whole_number(early_stopping_patience, 1):
            raise ValueError(
                "early_stopping_patience must be a whole number of epochs above 0, or null, "
                f"got {early_stopping_patience!r}"
            )
        if resume not in RESUME:
            raise ValueError(f"resume must be one of {list(RESUME)}, got {resume!r}")
        policy, reason = resolve_precision(precision, strategy)
        if not is_whole_number(grad_accum_steps, 1):
            raise ValueError(f"grad_accum_steps must be a positive integer, got {grad_accum_steps!r}")
        if grad_accum_steps > 1 and strategy == "tpu":
            # Accumulation applies by running each replica's apply from cross-replica context
            # (tfbert.classifier.Classifier): tested over CPU replicas and workers, never inside
            # a TPU's replicated step.
            raise ValueError(
                f"grad_accum_steps={grad_accum_steps} works with every strategy but tpu: on a TPU, "
                "raise pipeline.batch_size (the global batch) instead"
            )
        if profile_steps is not None:
            profile_steps = list(profile_steps)  # a Hydra ListConfig too
            pair = len(profile_steps) == 2 and all(is_whole_number(step, 1) for step in profile_steps)
            if not pair or profile_steps[0] > profile_steps[1]:
                raise ValueError(
                    f"profile_steps must be [first, last], integers with 0 < first <= last, got {profile_steps}"
                )
        if not is_whole_number(backup_every_steps, 1):
            raise ValueError(f"backup_every_steps must be a positive integer, got {backup_every_steps!r}")
        if not is_whole_number(steps_per_execution, 1):
            raise ValueError(f"steps_per_execution must be a positive integer, got {steps_per_execution!r}")
        if tensorboard_update_freq not in ("batch", "epoch") and not is_whole_number(tensorboard_update_freq, 1):
            raise ValueError(
                f"tensorboard_update_freq must be a positive number of batches, batch or epoch, got {tensorboard_update_freq!r}"
            )
        self.epochs = epochs
        self.monitor = monitor
        self.early_stopping_patience = early_stopping_patience
        self.jit_compile = jit_compile
        self.steps_per_execution = steps_per_execution
        self.tensorboard_update_freq = tensorboard_update_freq
        self.resume = resume
        self.backup_every_steps = backup_every_steps
        self.deterministic = deterministic
        self.strategy = strategy
        self.tpu = tpu
        self.precision = policy
        self.grad_accum_steps = grad_accum_steps
        self.profile_steps = profile_steps
        self.parallel_slices = resolve_parallel_slices(parallel_slices, strategy, jit_compile)
        if self.parallel_slices > 1:
            one_thread_per_op(max(self.parallel_slices, cpu_cores()))
            log.info("each batch runs as %d slices side by side, one thread per op", self.parallel_slices)
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        # Layers take the global policy when built, so it is set before any model exists.
        tf_keras.mixed_precision.set_global_policy(policy)
        log.info("precision %s (%s)", policy, reason)

    def optimizer_steps(self, steps_per_epoch: int) -> int:
        """Optimizer updates over the whole run (what the learning-rate schedule spans)."""
        return math.ceil(self.epochs * steps_per_epoch / self.grad_accum_steps)

    def compile(self, model: tf_keras.Model, optimizer: tf_keras.optimizers.Optimizer,
                loss: tf_keras.losses.Loss, metrics: list) -> None:
        """Compile `model` for training with this trainer's step settings: XLA, steps per
        execution, parallel slices and gradient accumulation (`fit` does it; bench/speed.py times the result)."""
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's (mixed_float16)
        if self.grad_accum_steps > 1 and getattr(inner, "lazy_embeddings", False):
            raise ConfigError(
                f"optimizer.lazy_embeddings=true updates only the embedding rows a batch uses, which "
                f"trainer.grad_accum_steps={self.grad_accum_steps} cannot tell (it sums dense gradients): "
                "set one of them back"
            )
        model.grad_accum_steps = self.grad_accum_steps
        model.parallel_slices = self.parallel_slices
        model.compile(
            optimizer=optimizer,
            loss=loss,
            metrics=metrics,
            jit_compile=self.jit_compile,
            steps_per_execution=self.steps_per_execution,
        )

    def checked_monitor(self, metrics: list, callbacks: list) -> tuple[str, str]:
        """The checkpoint monitor and its mode (`min` or `max`), checked against every val_*
        metric the run will log (the compiled `metrics`' and those `callbacks` declare in
        `logged_metrics`): a ValueError now, not at the end of the first epoch."""
        monitor = checkpoint_monitor(self.monitor, (metric.name for metric in metrics))
        logged = {"val_loss", *(f"val_{metric.name}" for metric in metrics),
                  *(name for callback in callbacks for name in getattr(callback, "logged_metrics", ()))}
        if monitor not in logged:
            raise ValueError(f"trainer.monitor={monitor!r} is not a metric this run logs; it logs {sorted(logged)}")
        return monitor, "min" if lower_is_better(monitor) else "max"

    def fit(
        self,
        model: tf_keras.Model,
        optimizer: tf_keras.optimizers.Optimizer,
        loss: tf_keras.losses.Loss,
        metrics: list,
        train_data: tf.data.Dataset,
        steps_per_epoch: int,
        validation_data: tf.data.Dataset,
        run_dir: Path,
        callbacks: list = (),
        class_weight: dict[int, float] | None = None,
        backup_dir: Path | None = None,
        checkpoint_model: tf_keras.Model | None = None,
    ) -> tf_keras.callbacks.History:
        """Train; afterwards `model` (or `checkpoint_model`) holds the best validation epoch's weights.

        `train_data` is one epoch of `steps_per_epoch` batches; `loss` and `metrics` fit
        the task's problem type; `callbacks` run before the trainer's own (one whose
        `validates` is true logs the val_* metrics itself, and Keras then does not
        evaluate `validation_data`; with one that `shows_progress`, Keras prints nothing); `class_weight`
        weights each class id's loss; `backup_dir` (default `<run_dir>/backup`) must be
        the same for every worker of a multi-worker run; `checkpoint_model` (default `model`)
        is what the best checkpoint keeps and gets back, when `model` trains only part of
        it (tfbert.features: the head model of a classifier). Raises Preempted after saving a
        backup on SIGTERM or Ctrl-C, and NonFiniteLoss when the loss becomes NaN/inf (no
        checkpoint is written from it). The backup stays after training: the caller removes it
        (checkpoints.remove_backup) once the run's outputs are written. The History returned
        also has `epochs_trained` and `train_seconds`: the run's epochs and training time, over
        all its processes.
        """
        run_dir = Path(run_dir)
        backup_dir = Path(backup_dir or run_dir / "backup")
        check_run_dir(run_dir, backup_dir, self.resume)
        done = backup_position(backup_dir, steps_per_epoch)  # verifies the backup, if any
        # Gradient accumulation applies a last group of fewer than grad_accum_steps batches too:
        # every batch trains, and the learning rate reaches the end of its schedule (optimizer_steps).
        model.accumulation_end = self.epochs * steps_per_epoch
        self.compile(model, optimizer, loss, metrics)
        monitor, mode = self.checked_monitor(metrics, callbacks)
        # Without a patience it waits all the epochs there are: it never stops a run.
        early_stopping = ResumableEarlyStopping(
            monitor, self.early_stopping_patience or self.epochs, mode,
            best_so_far(run_dir / "checkpoints"), epochs_done=done // steps_per_epoch,
        )
        # A run that had stopped early (its outputs not written yet) trains no further.
        epochs = done // steps_per_epoch if early_stopping.stopped_before else self.epochs
        if done >= epochs * steps_per_epoch:
            log.info("resuming from %s: training had finished when the run stopped", backup_dir)
        elif done:
            log.info("resuming from %s: epoch %d, step %d", backup_dir, done // steps_per_epoch + 1,
                     done % steps_per_epoch)
        # A callback that `validates` (tfbert.callbacks.ValidationInsights) runs the model
        # over the validation split anyway and logs the val_* metrics: no second pass.
        validated_by_callback = any(getattr(callback, "validates", False) for callback in callbacks)
        shows_progress = any(getattr(callback, "shows_progress", False) for callback in callbacks)
        nan_guard = StopOnNonFiniteLoss()
        # Keras calls batch callbacks once per steps_per_execution steps, and Backup counts calls.
        backup = Backup(backup_dir, save_freq=max(1, self.backup_every_steps // self.steps_per_execution))
        try:
            history = model.fit(
                stream_epochs(train_data, self.epochs, skip_batches=done),
                epochs=epochs,
                steps_per_epoch=steps_per_epoch,
                validation_data=None if validated_by_callback else validation_data,
                callbacks=[
                    *callbacks,
                    nan_guard,
                    BestCheckpoint(run_dir / "checkpoints", monitor, checkpoint_model),
                    backup,  # after the best checkpoint: see tfbert.checkpoints
                    EpochTensorBoard(
                        log_dir=str(run_dir / "tensorboard"),
                        update_freq=self.tensorboard_update_freq,
                        profile_batch=tuple(self.profile_steps) if self.profile_steps else 0,
                    ),
                    early_stopping,
                    backup.epoch_end_stop(),
                ],
                class_weight=class_weight,
                # A callback that `shows_progress` (tfbert.callbacks.ProgressLogger) shows the epochs;
                # without one, Keras' bar (terminal) or line per epoch.
                verbose=0 if shows_progress else 1 if sys.stdout.isatty() else 2,
            )
        finally:  # also when fit raises, where Keras calls no on_train_end
            backup.release_signals()
        if backup.preempted_at is not None:
            epoch, step, signal_name = backup.preempted_at
            raise Preempted(
                f"stopped on {signal_name} at epoch {epoch + 1}, step {step + 1}; the backup in {backup_dir} "
                f"resumes it: rerun the same command in the same run dir (add hydra.run.dir={backup_dir.parent})"
            )
        if nan_guard.stopped_at is not None:
            epoch, step = nan_guard.stopped_at
            best = run_dir / "checkpoints" / "best.json"
            raise NonFiniteLoss(
                f"the loss became NaN/inf at epoch {epoch}, step {step}; nothing was saved from it "
                f"(last good backup: {backup_dir}; best checkpoint so far: {best if best.exists() else 'none'}). "
                "Train again with a lower optimizer.learning_rate in another run dir (hydra.run.dir=...): "
                "this one's backup resumes only the settings it started with"
            )
        if early_stopping.stopped_epoch:
            log.info(
                "early stopping after epoch %d of %d: %s did not improve for %d epochs",
                early_stopping.stopped_epoch + 1, self.epochs, monitor, self.early_stopping_patience,
            )
        (checkpoint_model or model).load_weights(str(best_checkpoint(run_dir))).expect_partial()
        # Over all of the run's processes:
        history.epochs_trained = history.epoch[-1] + 1 if history.epoch else epochs
        history.train_seconds = backup.train_seconds()
        return history
