"""Each fault-injection scenario of tests/faults.py: observed as expected, no data lost."""

import json
from pathlib import Path

import pytest

from tests import faults


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(
    "scenario", faults.SCENARIOS,
    ids=["sigkill_resume", "sigterm_resume", "sigint_resume", "last_validation_sigterm", "export_sigkill", "crash_after_export", "tokenizing_sigterm", "nan_loss", "corrupt_backup", "finished_run_reused",
         "interrupted_best_write", "full_disk", "unwritable_run_dir"],
)
def test_scenario(scenario, space):
    result = scenario(space)
    assert result["observed"] == result["expected"]
    assert result["data lost"] == "none"


def test_a_second_ctrl_c_stops_at_once(tmp_path):
    """The first Ctrl-C asks for a backup at the end of the step; a second does not wait for it."""
    import signal

    from tfbert.checkpoints import Backup

    backup = Backup(tmp_path / "backup", save_freq=10)
    backup._on_signal(signal.SIGINT, None)
    assert backup._signalled == "SIGINT"
    with pytest.raises(KeyboardInterrupt):
        backup._on_signal(signal.SIGINT, None)


def test_a_stop_outside_training_says_how_to_continue():
    """Ctrl-C, SIGTERM (raised by the handler it installs, then restored) and either one
    surfacing inside TensorFlow's C++ code as a SystemError end in the same one-line message;
    any other SystemError goes on as it is."""
    import signal

    from tfbert.run_exit import Terminated, stops_resumable

    before = signal.getsignal(signal.SIGTERM)
    continues = "; the same command continues the run in its run dir: add hydra.run.dir=/runs/a"
    with pytest.raises(SystemExit, match=f"^tfbert: stopped on SIGTERM{continues}$"):
        with stops_resumable("/runs/a"):
            signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    with pytest.raises(SystemExit, match=f"^tfbert: interrupted{continues}$"):
        with stops_resumable("/runs/a"):
            raise KeyboardInterrupt
    with pytest.raises(SystemExit, match=f"^tfbert: stopped on SIGTERM{continues}$"):
        with stops_resumable("/runs/a"):
            try:
                raise Terminated
            except Terminated:
                raise SystemError("<built-in function save> returned a result with an exception set")
    with pytest.raises(SystemError, match="a bug"):
        with stops_resumable("/runs/a"):
            raise SystemError("a bug")
    with pytest.raises(SystemExit, match=f"^tfbert: stopped on SIGTERM{continues}$"):
        with stops_resumable("/runs/a"):
            try:  # as a loader reports what failed: a SIGTERM is no failure to report
                signal.raise_signal(signal.SIGTERM)
            except Exception:
                pass


def test_a_run_dir_is_checked_for_other_runs(tmp_path):
    """An unfinished run's backup is resumed (auto) or refused (never); a finished run's best
    checkpoint without a backup is refused; an empty run dir is fine."""
    import tensorflow as tf

    from tfbert.run_dir import RunDirInUse, check_run_dir

    backup_dir = tmp_path / "backup"
    check_run_dir(tmp_path, backup_dir, resume="auto")  # an empty dir
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.json").write_text("{}")
    with pytest.raises(RunDirInUse, match=f"{tmp_path} holds a finished run .*tfbert.export run_dir={tmp_path}"):
        check_run_dir(tmp_path, backup_dir, resume="auto")
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(backup_dir / "chief"), 1).save()
    check_run_dir(tmp_path, backup_dir, resume="auto")  # the unfinished run resumes
    with pytest.raises(RunDirInUse, match=f"{backup_dir} holds an unfinished run; use trainer.resume=auto"):
        check_run_dir(tmp_path, backup_dir, resume="never")


def test_a_crash_after_an_epoch_resumes_from_its_end(tmp_path):
    """Every epoch's end is backed up, whatever backup_every_steps says: a crash after epoch 1
    with no periodic backup yet resumes at epoch 2, not from scratch, and its run dir (which
    holds epoch 1's best.json) is not taken for a finished run. The crash gives Ctrl-C back."""
    import signal

    import numpy as np
    import tensorflow as tf
    import tf_keras

    from tests.conftest import tiny_classifier
    from tfbert.checkpoints import backup_position
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw
    from tfbert.run_dir import check_run_dir
    from tfbert.trainer import Trainer

    class CrashInEpoch2(tf_keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")

    ids = np.full((4, 6), 1000, np.int32)
    tokens = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    train = tf.data.Dataset.from_tensor_slices((tokens, np.array([0, 1, 0, 1], np.int32))).batch(2)
    trainer = Trainer(epochs=2, backup_every_steps=1000)
    ctrl_c = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError, match="simulated crash"):
        trainer.fit(tiny_classifier(), create_adamw(num_train_steps=4), *loss_and_metrics("single_label"), train, 2,
                    train, tmp_path, callbacks=[CrashInEpoch2()])
    assert signal.getsignal(signal.SIGINT) is ctrl_c  # the next Ctrl-C interrupts as before training
    assert (tmp_path / "checkpoints" / "best.json").is_file()
    assert backup_position(tmp_path / "backup", steps_per_epoch=2) == 2  # epoch 1 done
    check_run_dir(tmp_path, tmp_path / "backup", trainer.resume)  # resumable, not refused


@pytest.mark.parametrize("crashed_epoch", [1, 2])
@pytest.mark.parametrize("written", [False, True])
def test_a_crash_while_an_epoch_is_checkpointed_trains_that_epoch_again(crashed_epoch, written, tmp_path):
    """The best checkpoint comes before the epoch's backup, and a backup exists from the
    start: a crash between the two resumes before the epoch and checkpoints it, rather than
    skipping it with its best weights never saved (or, in epoch 1, taking the run for finished)."""
    import json

    from tests.test_speed_switches import batches, seeded_classifier
    from tfbert.checkpoints import BestCheckpoint
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw
    from tfbert.trainer import Trainer

    def fit(run_dir):
        Trainer(epochs=2, monitor="val_loss", backup_every_steps=1000).fit(
            seeded_classifier(), create_adamw(num_train_steps=16, learning_rate=1e-2),
            *loss_and_metrics("single_label"), batches(8, 2), 8, batches(8, 2), run_dir,
        )
        return json.loads((run_dir / "checkpoints" / "best.json").read_text())

    uninterrupted = fit(tmp_path / "uninterrupted")
    assert uninterrupted["epoch"] == 2  # the learning rate makes each epoch better
    checkpoint = BestCheckpoint.on_epoch_end

    def crash_once_written(self, epoch, logs=None):  # before or after the epoch's best checkpoint is written
        if written or epoch + 1 != crashed_epoch:
            checkpoint(self, epoch, logs)
        if epoch + 1 == crashed_epoch:
            raise RuntimeError("simulated crash")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BestCheckpoint, "on_epoch_end", crash_once_written)
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(tmp_path / "crashed")
    resumed = fit(tmp_path / "crashed")
    assert resumed["epoch"] == 2
    assert resumed["value"] == pytest.approx(uninterrupted["value"], rel=1e-5)


def test_a_run_resumes_only_with_the_settings_it_started_with(snippets_file, tmp_path):
    """A backup holds what the first settings made: a rerun with others is refused, naming
    them, before it writes anything (config.yaml stays the one the backup belongs to)."""
    import tensorflow as tf
    from omegaconf import OmegaConf

    from tests.conftest import compose_config
    from tfbert.run_dir import RunDirInUse
    from tfbert.train import run

    started = compose_config("model=tiny", f"task.data_file={snippets_file}", f"run_dir={tmp_path}")
    OmegaConf.save(started, tmp_path / "config.yaml", resolve=True)
    saved = (tmp_path / "config.yaml").read_text()
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(tmp_path / "backup" / "chief"), 1).save()
    changed = compose_config("model=tiny", f"task.data_file={snippets_file}", "optimizer.learning_rate=0.01",
                             f"run_dir={tmp_path}")
    with pytest.raises(RunDirInUse, match=r"other settings: optimizer.learning_rate \(5e-05 then, 0.01 now\)\. Rerun"):
        run(changed)
    assert (tmp_path / "config.yaml").read_text() == saved


def test_a_run_resumes_only_on_the_data_it_started_with(tmp_path):
    """A backup's place in the data (epoch, batch) means nothing in other data: a rerun on a
    data file that grew, or whose sentences changed, is refused, naming what differs, before
    the first run's task.json is replaced."""
    import tensorflow as tf
    from hydra.utils import instantiate

    from tests.conftest import compose_config, write_snippets
    from tfbert.run_dir import RunDirInUse, check_resumed_data
    from tfbert.train import run

    data_file = write_snippets(tmp_path / "snippets.txt", rows=120)
    cfg = compose_config("model=tiny", f"task.data_file={data_file}", f"run_dir={tmp_path / 'run'}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "task.json").write_text(json.dumps(instantiate(cfg.task).summary()))
    started = (tmp_path / "run" / "task.json").read_text()
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(tmp_path / "run" / "backup" / "chief"), 1).save()
    write_snippets(data_file, rows=200)
    with pytest.raises(RunDirInUse, match=r"holds an unfinished run on other data: sizes \({'train': 96, "
                                          r"'validation': 12, 'test': 12} then, {'train': 160, .*the content of the train split"):
        run(cfg)
    write_snippets(data_file, rows=120, seed=1)  # as many rows, other sentences
    with pytest.raises(RunDirInUse, match=r"on other data: the content of the train split; the content of the validation"):
        run(cfg)
    assert (tmp_path / "run" / "task.json").read_text() == started
    # The same data read from elsewhere (another machine's cache dir) resumes.
    moved = {**json.loads(started), "provenance": {"corpus": "/elsewhere/snippets.txt"}}
    check_resumed_data(tmp_path / "run" / "task.json", tmp_path / "run" / "backup", moved)


def test_a_recorded_export_is_found_only_where_this_run_wrote_it(tmp_path, monkeypatch):
    """finished_export finds the export record_export noted, with the id it holds: inside a
    run dir that moved since, or in an export_dir given relative to the working dir; not
    another run's export at that path, nor one that never finished."""
    from tfbert.checkpoints import EXPORT_ID, finished_export, record_export

    def export(directory, export_id):
        directory.mkdir(parents=True)
        (directory / EXPORT_ID).write_text(export_id)

    run_dir, backup = tmp_path / "run", tmp_path / "run" / "backup"
    backup.mkdir(parents=True)
    export(run_dir / "export" / "sentiment" / "1", record_export(backup, run_dir, run_dir / "export" / "sentiment" / "1"))
    (tmp_path / "run").rename(tmp_path / "moved")
    assert finished_export(tmp_path / "moved" / "backup", tmp_path / "moved") == tmp_path / "moved" / "export" / "sentiment" / "1"

    monkeypatch.chdir(tmp_path)
    backup = tmp_path / "moved" / "backup"
    served = Path("serving") / "sentiment" / "1"  # export.export_dir=serving
    export_id = record_export(backup, tmp_path / "moved", served)
    assert finished_export(backup, tmp_path / "moved") is None  # not written yet
    export(served, "another run's id")
    assert finished_export(backup, tmp_path / "moved") is None
    (served / EXPORT_ID).write_text(export_id)
    monkeypatch.chdir(tmp_path / "moved")  # the record holds the absolute path
    assert finished_export(backup, tmp_path / "moved") == tmp_path / "serving" / "sentiment" / "1"


def test_hydra_refuses_a_run_dir_in_use_before_recording_the_launch(snippets_file, tmp_path):
    """RunDirCheck runs the run-dir checks at Hydra's run start, before Hydra writes .hydra/,
    on the dir Hydra writes to, which may be named with ${hydra:...} (as the default is)."""
    import tensorflow as tf
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from tests.conftest import ROOT
    from tfbert.run_dir import RunDirCheck

    run_dir = tmp_path / "sentiment"

    def launch(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            config = compose("config", [f"hydra.run.dir={tmp_path}/${{hydra:runtime.choices.task}}", "model=tiny",
                                        f"task.data_file={snippets_file}", *overrides], return_hydra_config=True)
        HydraConfig.instance().cfg = None  # as before a launch: Hydra sets it after the callback
        return RunDirCheck().on_run_start(config)

    assert launch() is None  # no dir yet
    (run_dir / "checkpoints").mkdir(parents=True)
    assert launch() is None  # an empty dir
    (run_dir / "checkpoints" / "best.json").write_text("{}")
    with pytest.raises(SystemExit, match=f"tfbert: {run_dir} holds a finished run"):
        launch()
    with pytest.raises(SystemExit, match=f"tfbert: {run_dir} holds a finished run"):
        launch(f"run_dir={tmp_path / 'elsewhere'}")  # the run would train elsewhere, but Hydra records it there
    launch("hydra.run.dir=" + str(tmp_path / "new"))  # another dir: fine
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        started = compose("config", ["model=tiny", f"task.data_file={snippets_file}", "trainer.resume=never",
                                     f"run_dir={tmp_path / 'where it was'}"])
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(started, resolve=True))
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(run_dir / "backup" / "chief"), 1).save()
    # resume=auto continues a run started with resume=never, in a dir that has moved since
    assert launch() is None
    with pytest.raises(SystemExit, match=r"holds an unfinished run with other settings: optimizer.learning_rate"):
        launch("optimizer.learning_rate=0.01")  # not the settings the backup's run started with
    with pytest.raises(SystemExit, match="holds an unfinished run; use trainer.resume=auto"):
        launch("trainer.resume=never")


def test_an_epoch_cut_short_logs_no_epoch_scalars(tmp_path):
    """The resumed run logs the epoch a stop cut short; logged twice, TensorBoard would show both."""
    import numpy as np
    import tf_keras
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tfbert.trainer import EpochTensorBoard

    def epoch_losses_logged():
        events = EventAccumulator(str(tmp_path / "train"), size_guidance={"tensors": 0})
        events.Reload()
        return len(events.Tensors("epoch_loss")) if "epoch_loss" in events.Tags()["tensors"] else 0

    class StopInSecondStep(tf_keras.callbacks.Callback):  # as Backup on SIGTERM
        def on_train_batch_end(self, batch, logs=None):
            self.model.stop_training = batch == 1

    model = tf_keras.Sequential([tf_keras.layers.Dense(1, input_shape=(2,))])
    model.compile("sgd", "mse")
    data = (np.ones((8, 2)), np.ones(8))
    model.fit(*data, batch_size=2, callbacks=[StopInSecondStep(), EpochTensorBoard(str(tmp_path))], verbose=0)
    assert epoch_losses_logged() == 0
    model.fit(*data, batch_size=2, callbacks=[EpochTensorBoard(str(tmp_path))], verbose=0)
    assert epoch_losses_logged() == 1


def test_an_epoch_cut_short_is_not_checkpointed(tmp_path):
    """SIGTERM in epoch 1: the run stops with a backup, and the best checkpoint does not take the
    half-trained weights for the epoch's, whatever a validation logs (the rerun finishes it)."""
    import os
    import signal

    import numpy as np
    import tensorflow as tf
    import tf_keras

    from tests.conftest import tiny_classifier
    from tfbert.checkpoints import Preempted
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw
    from tfbert.trainer import Trainer

    class TermAtFirstStep(tf_keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                os.kill(os.getpid(), signal.SIGTERM)

    class Validator(tf_keras.callbacks.Callback):  # a validation that runs even on a cut-short epoch
        validates = True

        def on_epoch_end(self, epoch, logs=None):
            logs.update(val_loss=1.0, val_accuracy=0.5)

    ids = np.full((4, 6), 1000, np.int32)
    tokens = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    train = tf.data.Dataset.from_tensor_slices((tokens, np.array([0, 1, 0, 1], np.int32))).batch(2)
    with pytest.raises(Preempted, match=f"stopped on SIGTERM at epoch 1, step 1; .* \\(add hydra.run.dir={tmp_path}\\)$"):
        Trainer(epochs=2).fit(tiny_classifier(), create_adamw(num_train_steps=4), *loss_and_metrics("single_label"),
                              train, 2, train, tmp_path, callbacks=[TermAtFirstStep(), Validator()])
    assert not (tmp_path / "checkpoints" / "best.json").exists()
