"""Fault injection: crash, preempt, poison and corrupt training runs; check nothing is lost.

    python tests/faults.py          # runs every scenario, prints the table

Each scenario returns a row: scenario, expected, observed, data lost. tests/test_faults.py
runs the same scenarios and requires observed == expected and data lost == "none".
Runs use the tiny random BERT with dropout off and op determinism on, so a resumed run
must end with exactly the metrics of an uninterrupted one.
"""

import errno
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import NO_DROPOUT_OVERRIDES, write_snippets  # noqa: E402


def train_args(data_file: Path, run_dir: Path) -> list[str]:
    return [
        sys.executable, "train.py", "model=tiny", "head=mean", *NO_DROPOUT_OVERRIDES,
        f"task.data_file={data_file}", "pipeline.batch_size=4", "trainer.epochs=2",
        "trainer.backup_every_steps=5", "trainer.deterministic=true", "optimizer.learning_rate=1e-3",
        f"hydra.run.dir={run_dir}",
    ]


def start(data_file, run_dir):
    return subprocess.Popen(train_args(data_file, run_dir), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(data_file, run_dir, *overrides: str) -> tuple[int, str]:
    done = subprocess.run([*train_args(data_file, run_dir), *overrides], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    return done.returncode, done.stdout + done.stderr


def backups_done(run_dir: Path) -> int:
    """How many backups the run has saved (the first holds step 0, from before training)."""
    state = run_dir / "backup" / "chief" / "checkpoint"  # written last: a backup is complete once listed
    return int(state.read_text().split('"ckpt-')[1].split('"')[0]) if state.is_file() else 0


def interrupt_after_first_backup(data_file, run_dir, signum) -> tuple[int, str]:
    """Signal the run once its first backup after a training step is saved."""
    process = start(data_file, run_dir)
    deadline = time.time() + 300
    while backups_done(run_dir) < 2 and process.poll() is None:
        if time.time() > deadline:
            process.kill()
            raise TimeoutError("no backup appeared within 300 s")
        time.sleep(0.01)
    process.send_signal(signum)
    output, _ = process.communicate(timeout=120)
    return process.returncode, output


def metrics(run_dir: Path) -> dict:
    """The evaluation results of a run and the epochs it trained (not its timings)."""
    results = json.loads((run_dir / "metrics.json").read_text())
    return {key: results[key] for key in ("validation", "test", "train_epochs")}


class Workspace:
    """A data file and a reference (uninterrupted) run shared by the scenarios."""

    def __init__(self, root: Path):
        self.root = root
        self.data_file = write_snippets(root / "snippets.txt", rows=240)
        self._reference = None

    def run_dir(self, name: str) -> Path:
        return self.root / name

    @property
    def reference(self) -> dict:
        if self._reference is None:
            code, output = finish(self.data_file, self.run_dir("reference"))
            if code:
                raise RuntimeError(f"reference run failed:\n{output[-2000:]}")
            self._reference = metrics(self.run_dir("reference"))
        return self._reference


def row(scenario, expected, observed, lost):
    return {"scenario": scenario, "expected": expected, "observed": observed, "data lost": lost}


def run_in_process(space: Workspace, run_dir: Path, fit, stops_with: type[BaseException]) -> str:
    """The scenario's run in this process with Trainer.fit replaced by `fit`: the message of
    the `stops_with` it raises, or '' when it finishes."""
    from tests.conftest import compose_config
    from tfbert.trainer import Trainer
    from tfbert.train import run

    cfg = compose_config(*train_args(space.data_file, run_dir)[2:-1], f"run_dir={run_dir}")
    with mock.patch.object(Trainer, "fit", fit):
        try:
            run(cfg)
        except stops_with as error:
            return str(error)
    return ""


def interrupted_then_resumed(space: Workspace, signum, name: str) -> dict:
    run_dir = space.run_dir(name)
    code, output = interrupt_after_first_backup(space.data_file, run_dir, signum)
    interrupted = f"exit {code}"
    if f"stopped on {signal.Signals(signum).name}" in output:
        interrupted += ", backup saved"
    code, output = finish(space.data_file, run_dir)
    resumed = "resumed" if "resuming from" in output else "restarted"
    same = code == 0 and metrics(run_dir) == space.reference
    observed = f"{interrupted}; {resumed}; metrics {'identical' if same else 'differ'}"
    expected_interrupt = "exit -9" if signum == signal.SIGKILL else "exit 1, backup saved"
    return row(
        f"{signal.Signals(signum).name} mid-epoch, rerun",
        f"{expected_interrupt}; resumed; metrics identical",
        observed,
        "none" if same else "training progress or metrics",
    )


def nan_loss(space: Workspace) -> dict:
    """The loss turns NaN at step 7: training stops; the step-5 backup stays finite."""
    import numpy as np
    import tensorflow as tf
    import tf_keras

    from tfbert.checkpoints import backup_position
    from tfbert.trainer import NonFiniteLoss, Trainer

    run_dir = space.run_dir("nan")
    real_fit = Trainer.fit

    def poisoned_fit(self, model, optimizer, loss, *args, **kwargs):
        def poisoned(labels, logits):
            value = loss(labels, logits)
            return tf.where(optimizer.iterations >= 6, tf.constant(np.nan, value.dtype), value)

        return real_fit(self, model, optimizer, poisoned, *args, **kwargs)

    message = run_in_process(space, run_dir, poisoned_fit, NonFiniteLoss)
    backup = tf.train.latest_checkpoint(str(run_dir / "backup" / "chief"))
    finite = backup is not None and all(
        np.isfinite(tf.train.load_checkpoint(backup).get_tensor(name)).all()
        for name, dtype in tf.train.load_checkpoint(backup).get_variable_to_dtype_map().items()
        if dtype.is_floating
    )
    position = backup_position(run_dir / "backup", steps_per_epoch=10**6) if backup else 0
    observed = f"{'stopped at epoch 1, step 7' if 'epoch 1, step 7' in message else message or 'no error'}; "
    observed += f"backup at step {position}, {'finite' if finite else 'NOT finite'}"
    tf_keras.backend.clear_session()
    return row("NaN loss at step 7", "stopped at epoch 1, step 7; backup at step 5, finite", observed,
               "none" if finite and position == 5 and not (run_dir / "metrics.json").exists() else "backup")


def signal_in_last_validation(space: Workspace) -> dict:
    """SIGTERM after the last training step, at the last validation: the run backs up
    its finished training and stops; the rerun goes straight to evaluation and export."""
    import os

    import tf_keras

    from tfbert.checkpoints import Preempted
    from tfbert.trainer import Trainer

    run_dir = space.run_dir("last_validation")
    real_fit = Trainer.fit

    class TermInLastValidation(tf_keras.callbacks.Callback):  # runs after the run's validation callback
        def on_epoch_end(self, epoch, logs=None):
            if epoch == self.params["epochs"] - 1:
                os.kill(os.getpid(), signal.SIGTERM)

    def fit_with_signal(self, *args, callbacks=(), **kwargs):
        return real_fit(self, *args, callbacks=[*callbacks, TermInLastValidation()], **kwargs)

    message = run_in_process(space, run_dir, fit_with_signal, Preempted)
    stopped = "stopped, backup saved" if "stopped on SIGTERM at epoch 2" in message else message or "no stop"
    tf_keras.backend.clear_session()
    code, output = finish(space.data_file, run_dir)
    resumed = "no training left" if "training had finished when the run stopped" in output else "trained again"
    same = code == 0 and metrics(run_dir) == space.reference
    observed = f"{stopped}; {resumed}; metrics {'identical' if same else 'differ'}"
    return row("SIGTERM at the last validation, rerun", "stopped, backup saved; no training left; metrics identical",
               observed, "none" if same else "training or metrics")


def killed_while_exporting(space: Workspace) -> dict:
    """SIGKILL after training, while the run exports: its backup (the finished training) is
    still there, so the rerun trains nothing, evaluates and exports."""
    run_dir = space.run_dir("export_killed")
    process = start(space.data_file, run_dir)
    for line in process.stdout:
        if "exporting the SavedModel" in line:
            time.sleep(1)  # into the export
            process.kill()
            break
    process.communicate(timeout=120)
    killed = "killed while exporting" if process.returncode == -signal.SIGKILL else f"exit {process.returncode}"
    code, output = finish(space.data_file, run_dir)
    resumed = "no training left" if "training had finished when the run stopped" in output else "trained again"
    exported = [path.parent.name for path in (run_dir / "export").glob("*/*/saved_model.pb")]
    leftovers = [path.name for path in (run_dir / "export").glob("*/.*")] + [name for name in ("backup",) if (run_dir / name).exists()]
    same = code == 0 and metrics(run_dir) == space.reference and exported == ["1"] and not leftovers
    observed = f"{killed}; {resumed}; metrics {'identical' if same else 'differ'}, exported {exported}, left over {leftovers}"
    return row("SIGKILL while exporting, rerun",
               "killed while exporting; no training left; metrics identical, exported ['1'], left over []",
               observed, "none" if same else "metrics or export")


def crash_after_exporting(space: Workspace) -> dict:
    """A crash after the export, before the backup is removed: the rerun finds the run
    finished (its export recorded in the backup) and removes the backup; no second export."""
    from tfbert import train
    from tfbert.trainer import Trainer

    run_dir = space.run_dir("crash_after_export")

    def crash(backup_dir):
        raise RuntimeError("crash after the export")

    with mock.patch.object(train, "remove_backup", crash):
        message = run_in_process(space, run_dir, Trainer.fit, RuntimeError)
    crashed = "crashed after exporting" if message == "crash after the export" else message or "no crash"
    code, output = finish(space.data_file, run_dir)
    finished = "finished" if "the run had finished" in output and "train batches" not in output else "ran again"
    exported = [path.parent.name for path in (run_dir / "export").glob("*/*/saved_model.pb")]
    same = code == 0 and metrics(run_dir) == space.reference and exported == ["1"] and not (run_dir / "backup").exists()
    observed = f"{crashed}; {finished}; metrics {'identical' if same else 'differ'}, exported {exported}"
    return row("crash after the export, before the backup's removal, rerun",
               "crashed after exporting; finished; metrics identical, exported ['1']", observed,
               "none" if same else "metrics, export or backup")


def sigterm_while_tokenizing(space: Workspace) -> dict:
    """SIGTERM outside training (while the data is tokenized): a one-line message, in
    train.log too, saying how to continue; the rerun finishes the run."""
    import os

    run_dir = space.run_dir("sigterm_tokenizing")
    wrapper = (
        "import os, runpy, signal, sys\n"
        "from tfbert.preprocessing import Preprocessor\n"
        "tokenize = Preprocessor.__call__\n"
        "def stopped(self, splits):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return tokenize(self, splits)\n"
        "Preprocessor.__call__ = stopped\n"
        "sys.argv = sys.argv[1:]\n"
        "runpy.run_path('train.py', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", wrapper, *train_args(space.data_file, run_dir)[1:]], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    message = f"tfbert: stopped on SIGTERM; the same command continues the run in its run dir: add hydra.run.dir={run_dir}"
    said = done.stderr.strip().splitlines()[-1:] == [message] and message in (run_dir / "train.log").read_text()
    stopped = f"exit {done.returncode}, {'message in console and train.log' if said else 'no message'}"
    code, output = finish(space.data_file, run_dir)
    same = code == 0 and metrics(run_dir) == space.reference
    observed = f"{stopped}; metrics {'identical' if same else 'differ'}"
    return row("SIGTERM while tokenizing, rerun", "exit 1, message in console and train.log; metrics identical",
               observed, "none" if same else "the run")


def corrupt_backup(space: Workspace) -> dict:
    """A backup whose data file is damaged is refused, naming it, and left in place."""
    run_dir = space.run_dir("corrupt")
    interrupt_after_first_backup(space.data_file, run_dir, signal.SIGKILL)
    from tfbert.checkpoints import latest_backup

    latest = Path(latest_backup(run_dir / "backup"))  # the backup a rerun reads (a kill can leave an older one)
    (data,) = latest.parent.glob(latest.name + ".data-*")
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2: len(raw) // 2 + 64] = b"\xff" * 64
    data.write_bytes(bytes(raw))
    code, output = finish(space.data_file, run_dir)
    named = "is unreadable" in output and str(run_dir / "backup") in output
    observed = f"exit {code}; {'refused, path named' if named else 'NOT refused'}"
    return row("corrupted backup on resume", "exit 1; refused, path named", observed,
               "none" if named and data.exists() else "backup silently used or deleted")


def interrupted_best_write(space: Workspace) -> dict:
    """Writing a new best checkpoint crashes half-way: the previous best stays readable."""
    import tf_keras

    from tfbert.checkpoints import BestCheckpoint, best_checkpoint, verify_checkpoint

    directory = space.run_dir("best_write") / "checkpoints"
    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    best = BestCheckpoint(directory, monitor="val_accuracy")
    best.set_model(model)
    best.on_epoch_end(0, {"val_accuracy": 0.5})
    first = best_checkpoint(directory.parent)

    def crash(path, *args, **kwargs):
        Path(path + ".index").write_bytes(b"half")  # a partial file, then the crash
        raise OSError(errno.EIO, "simulated crash while writing", path)

    with mock.patch.object(model, "save_weights", crash):
        try:
            best.on_epoch_end(1, {"val_accuracy": 0.9})
        except OSError:
            pass
    kept = best_checkpoint(directory.parent)
    verify_checkpoint(str(kept))
    observed = "previous best kept and readable" if kept == first else f"pointer moved to {kept.name}"
    return row("crash while writing a new best checkpoint", "previous best kept and readable", observed,
               "none" if kept == first else "best checkpoint")


def full_disk_metrics(space: Workspace) -> dict:
    """The disk fills while metrics.json is replaced: the error names the path; the old file survives."""
    from tfbert.checkpoints import write_json

    path = space.run_dir("disk") / "metrics.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"test": {"accuracy": 0.5}})

    def no_space(*args):  # as a full disk fails a write: no file named
        raise OSError(errno.ENOSPC, "No space left on device")

    message = ""
    with mock.patch("tfbert.atomic.os.fsync", no_space):
        try:
            write_json(path, {"test": {"accuracy": 0.9}})
        except OSError as error:
            message = str(error)
    intact = json.loads(path.read_text()) == {"test": {"accuracy": 0.5}}
    leftovers = [p.name for p in path.parent.iterdir() if p.name != "metrics.json"]
    observed = (f"{'error names the path' if str(path) in message else 'path not named'}; "
                f"{'old file intact' if intact else 'old file damaged'}; "
                f"{'no temporary files left' if not leftovers else f'left {leftovers}'}")
    return row("disk full while writing metrics.json",
               "error names the path; old file intact; no temporary files left",
               observed, "none" if intact else "metrics.json")


def finished_run_dir_reused(space: Workspace) -> dict:
    """A new run (another seed) in a finished run's dir is refused before it writes anything there."""
    run_dir = space.run_dir("reference")
    space.reference  # the finished run
    # every file, Hydra's record of the launch (.hydra/overrides.yaml, which tfbert.compare reads) and log too
    files = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert run_dir / ".hydra" / "overrides.yaml" in files and run_dir / "train.log" in files
    code, output = finish(space.data_file, run_dir, "seed=7")
    named = f"{run_dir} holds a finished run" in output and "Traceback" not in output
    untouched = all(path.read_bytes() == content for path, content in files.items())
    observed = f"exit {code}; {'refused, run dir named' if named else 'NOT refused'}; "
    observed += "finished run untouched" if untouched else "finished run changed"
    return row("new run in a finished run's dir", "exit 1; refused, run dir named; finished run untouched", observed,
               "none" if untouched else "the finished run's files")


def unwritable_run_dir(space: Workspace) -> dict:
    """A run_dir that cannot be created stops the run at once, naming the path."""
    from tests.conftest import compose_config
    from tfbert.train import run

    blocker = space.root / "a_file"
    blocker.write_text("not a directory")
    run_dir = blocker / "run"
    try:
        run(compose_config("model=tiny", f"task.data_file={space.data_file}", f"run_dir={run_dir}"))
        message = ""
    except SystemExit as error:
        message = str(error)
    observed = "clear error naming the path" if f"cannot create run_dir {run_dir}" in message else message or "no error"
    return row("run_dir cannot be created", "clear error naming the path", observed, "none")


SCENARIOS = [
    lambda space: interrupted_then_resumed(space, signal.SIGKILL, "sigkill"),
    lambda space: interrupted_then_resumed(space, signal.SIGTERM, "sigterm"),
    lambda space: interrupted_then_resumed(space, signal.SIGINT, "sigint"),  # Ctrl-C
    signal_in_last_validation,
    killed_while_exporting,
    crash_after_exporting,
    sigterm_while_tokenizing,
    nan_loss,
    corrupt_backup,
    finished_run_dir_reused,
    interrupted_best_write,
    full_disk_metrics,
    unwritable_run_dir,
]


def main():
    with tempfile.TemporaryDirectory() as root:
        space = Workspace(Path(root))
        rows = [scenario(space) for scenario in SCENARIOS]
    columns = ["scenario", "expected", "observed", "data lost"]
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for entry in rows:
        print("| " + " | ".join(str(entry[column]) for column in columns) + " |")
    return 0 if all(entry["data lost"] == "none" and entry["observed"] == entry["expected"] for entry in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
