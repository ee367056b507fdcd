"""Checkpoints that survive crashes: the best weights, and a backup to resume from.

best:    checkpoints/best-<epoch>.* plus checkpoints/best.json pointing at them. A new
         best is written under a new name and best.json is replaced atomically after
         it, so a crash at any point leaves the previous best readable.
backup:  backup/ (tf_keras BackupAndRestore): model, optimizer (and so the learning-
         rate schedule position), epoch and step, when training starts, every `save_freq`
         steps, at each epoch's end (after its best checkpoint: a crash between the two
         redoes the epoch, rather than losing its checkpoint) and on SIGTERM or Ctrl-C;
         never written from a non-finite loss; kept after training, until the run's outputs
         are written (remove_backup): a run stopped while it evaluates or exports resumes
         with its training done. So a best.json with no backup beside it is a finished run's.
         Before the export, backup/export.json records where it goes and an id the export
         will hold (record_export): a run stopped between its export and the backup's
         removal is finished on rerun (finished_export), not exported twice.
"""

import json
import logging
import math
import shutil
import signal
import time
import uuid
from pathlib import Path

import tensorflow as tf
import tf_keras

from tfbert.atomic import atomic_file
from tfbert.objectives import BestEpoch

log = logging.getLogger(__name__)
EXPORT_RECORD = "export.json"  # in the backup dir: where the run's export goes (record_export)
EXPORT_ID = ".tfbert-export-id"  # in an export: the id its run recorded (finished_export)


class CorruptCheckpoint(RuntimeError):
    """A checkpoint on disk cannot be read; the message names its path."""


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically (tfbert.atomic): the whole payload or the file as it was."""
    with atomic_file(path) as file:
        file.write(json.dumps(payload, indent=2) + "\n")


def best_checkpoint(run_dir: Path) -> Path:
    """The weights prefix of a run's best epoch (for `model.load_weights`)."""
    pointer = Path(run_dir) / "checkpoints" / "best.json"
    if not pointer.is_file():
        raise FileNotFoundError(f"{pointer} does not exist: the run saved no best checkpoint")
    return pointer.parent / json.loads(pointer.read_text())["checkpoint"]


def best_so_far(directory: Path | None) -> dict | None:
    """The best.json in a checkpoints `directory` (checkpoint, epoch, monitor, value, the
    epoch's val_* logs), or None: a run's best epoch so far, which a resumed run must beat."""
    pointer = Path(directory) / "best.json" if directory else None
    return json.loads(pointer.read_text()) if pointer and pointer.is_file() else None


def verify_checkpoint(prefix: str) -> None:
    """Read every tensor of a TF checkpoint (their CRCs are checked), or raise CorruptCheckpoint."""
    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, ValueError) as error:
        raise CorruptCheckpoint(
            f"checkpoint {prefix} is unreadable ({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None


class BestCheckpoint(tf_keras.callbacks.Callback):
    """Keeps the weights of the best epoch by `monitor`, written atomically.

    Which epoch is better is objectives.BestEpoch's rule; on a resumed run, the best value so
    far comes from best.json, so an epoch only replaces the kept weights when it really is
    better. `saved_model` is the model whose weights are kept, when it is not the one being
    fit (feature extraction fits the head alone but keeps the whole classifier).
    """

    def __init__(self, directory: Path, monitor: str, saved_model: tf_keras.Model | None = None):
        super().__init__()
        self.directory = Path(directory)
        self.saved_model = saved_model
        self.monitor = monitor
        self.tracker = BestEpoch(monitor, best=(best_so_far(directory) or {}).get("value"))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        if self.model.stop_training or not math.isfinite(logs.get("loss", 0.0)):
            # An epoch cut short (SIGTERM, Ctrl-C: the rerun finishes it) or from a NaN/inf step.
            return
        if value is None:
            raise KeyError(f"monitor {self.monitor!r} is not among the logged metrics {sorted(logs or {})}")
        if not self.tracker.update(logs):
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"best-{epoch + 1:04d}"
        (self.saved_model or self.model).save_weights(str(self.directory / name))
        val_logs = {key: float(value) for key, value in logs.items() if key.startswith("val_")}
        write_json(self.directory / "best.json", {"checkpoint": name, "epoch": epoch + 1, "monitor": self.monitor,
                                                  "value": float(value), "logs": val_logs})
        for stale in self.directory.glob("best-*"):
            if not stale.name.startswith(name + "."):
                stale.unlink()


class Preempted(SystemExit):
    """Training stopped on SIGTERM or SIGINT (Ctrl-C) after saving a backup."""


# Signals that stop training after the current step, with a backup to resume from. A second
# Ctrl-C stops at once (KeyboardInterrupt), from the last regular backup.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


# Beside the backup: the training time up to it, which a resumed run adds its own to.
TRAIN_SECONDS = "train_seconds.json"


class Backup(tf_keras.callbacks.BackupAndRestore):
    """BackupAndRestore that also saves at each epoch's end and on SIGTERM or Ctrl-C
    (STOP_SIGNALS), and never saves a non-finite state. `preempted_at` is then (epoch, batch,
    signal name).

    Args:
        backup_dir: where the backup lives (kept after training: see remove_backup).
        save_freq: back up every this many steps.
    """

    def __init__(self, backup_dir: Path, save_freq: int):
        super().__init__(str(backup_dir), save_freq=save_freq, delete_checkpoint=False)
        # Keras leaves OneDeviceStrategy (trainer.strategy=one_device) off its list, though
        # a backup of one device's variables is the plain case.
        self._supported_strategies += (tf.distribute.OneDeviceStrategy,)
        self.preempted_at = None
        self._signalled = False
        self._finite = True
        self._last_batch = 0

    def on_train_begin(self, logs=None):
        self._previous_handlers = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        super().on_train_begin(logs)
        self._started = time.perf_counter()
        record = Path(self.backup_dir) / TRAIN_SECONDS
        self._seconds_before = json.loads(record.read_text())["train_seconds"] if record.is_file() else 0.0
        if self._training_state._ckpt_saved_batch.numpy() < 0:  # no step done: nothing, or step 0, restored
            # From the start, so that the run's first best.json never stands without a backup
            # (which would mark the run finished): the state training starts from. Every worker
            # decides alike, whether or not the chief's step-0 backup is already there.
            self._backup(epoch=0, batch=-1)

    def train_seconds(self) -> float:
        """Training time of the whole run: its earlier processes' (up to their last backup) and this one's."""
        return self._seconds_before + time.perf_counter() - self._started

    def _backup(self, epoch, batch=0):
        # Keras records the step an execution began with (on_train_batch_begin), which under
        # steps_per_execution > 1 is not the last step done, and the epoch only once one
        # began: the backup records `epoch` and `batch`, the last step done (-1: none yet).
        self._training_state._ckpt_saved_epoch.assign(epoch)
        self._training_state._ckpt_saved_batch.assign(batch)
        super()._backup(epoch, batch)
        if self.model.distribute_strategy.extended.should_checkpoint:  # the chief's backup dir
            write_json(Path(self.backup_dir) / TRAIN_SECONDS, {"train_seconds": self.train_seconds()})

    def _on_signal(self, signum, frame):
        if self._signalled and signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C again: the user will not wait for the step to end
        self._signalled = signal.Signals(signum).name

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        self._finite = loss is None or math.isfinite(float(loss))
        if not self._finite:
            return  # a NaN/inf step must never reach the backup
        self._last_batch = batch
        if batch + 1 >= self.params["steps"]:
            # The epoch's last step: its backup comes at the epoch's end, after the validation
            # (Keras resumes a backup of the last step at the next epoch), and so does a stop
            # on a signal (EpochEndStop).
            return
        super().on_train_batch_end(batch, logs)
        if self._signalled and self.preempted_at is None:
            self._preempt(batch)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        # Also at each epoch's end, after the best checkpoint (an earlier callback): a crash
        # before this backup resumes from an earlier one and trains the epoch again.
        if self._finite and self.preempted_at is None:
            self._backup(epoch=epoch, batch=self._last_batch)
        super().on_epoch_end(epoch, logs)

    def epoch_end_stop(self) -> tf_keras.callbacks.Callback:
        """The callback to put last in fit's list: it stops the run at the end of an epoch in
        whose last step or validation a signal came, once the epoch is validated, backed up
        and checkpointed."""
        return EpochEndStop(self)

    def _preempt(self, batch: int) -> None:
        self._backup(epoch=self._current_epoch, batch=batch)
        self.preempted_at = (self._current_epoch, batch, self._signalled)

    def release_signals(self) -> None:
        """Give SIGTERM and Ctrl-C back to the handlers they had before training (at the end
        of training, and after a fit that raised: the next Ctrl-C must interrupt)."""
        for signum, handler in getattr(self, "_previous_handlers", {}).items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_train_end(self, logs=None):
        self.release_signals()
        if self._signalled and self.preempted_at is None and self._finite:
            # The signal came after the last step, in the last validation pass: a backup of the
            # finished training lets a rerun go straight to evaluation and export.
            self._preempt(self._last_batch)
        super().on_train_end(logs)


class EpochEndStop(tf_keras.callbacks.Callback):
    """See Backup.epoch_end_stop."""

    def __init__(self, backup: Backup):
        super().__init__()
        self.backup = backup

    def on_epoch_end(self, epoch, logs=None):
        backup = self.backup
        if backup._signalled and backup.preempted_at is None and not self.model.stop_training:
            backup.preempted_at = (epoch, backup._last_batch, backup._signalled)  # backed up at the epoch's end
            self.model.stop_training = True


def remove_backup(backup_dir: Path) -> None:
    """Remove a run's backup once its outputs are written: from then on, its best.json
    without a backup marks the run as finished."""
    shutil.rmtree(backup_dir, ignore_errors=True)


def record_export(backup_dir: Path, run_dir: Path, directory: Path) -> str:
    """Note in a run's backup the version directory its export is about to be written to
    (relative to `run_dir` where it is inside it: a run dir may move); returns the id that
    export is to hold in its EXPORT_ID file, which tells it from another run's export there."""
    directory, run_dir = Path(directory).absolute(), Path(run_dir).absolute()
    if directory.is_relative_to(run_dir):
        directory = directory.relative_to(run_dir)
    export_id = uuid.uuid4().hex
    write_json(Path(backup_dir) / EXPORT_RECORD, {"export": str(directory), "id": export_id})
    return export_id


def finished_export(backup_dir: Path, run_dir: Path) -> Path | None:
    """The export a run had written when it stopped before removing its backup, or None
    (no export recorded, or its version directory not there, or another's: the export did
    not finish, as the directory appears whole, by a rename, when it does)."""
    record = Path(backup_dir) / EXPORT_RECORD
    if not record.is_file():
        return None
    recorded = json.loads(record.read_text())
    directory = Path(run_dir) / recorded["export"]  # an absolute path stays as it is
    stamp = directory / EXPORT_ID
    return directory if stamp.is_file() and stamp.read_text() == recorded["id"] else None


def latest_backup(backup_dir: Path) -> str | None:
    """The newest backup checkpoint's prefix, or None when there is no backup."""
    return tf.train.latest_checkpoint(str(Path(backup_dir) / "chief"))  # BackupAndRestore's layout


def backup_position(backup_dir: Path, steps_per_epoch: int) -> int:
    """Training batches already done according to a backup (0 when there is none)."""
    latest = latest_backup(backup_dir)
    if latest is None:
        return 0
    verify_checkpoint(latest)
    reader = tf.train.load_checkpoint(latest)
    epoch = int(reader.get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
    batch = int(reader.get_tensor("ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE"))
    return epoch * steps_per_epoch + batch + 1
