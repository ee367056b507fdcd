"""Each fault-injection scenario of tests/faults.py: observed as expected, no data lost."""

import pytest

from tests import faults


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(
    "scenario", faults.SCENARIOS,
    ids=["sigkill_resume", "sigterm_resume", "sigint_resume", "last_validation_sigterm", "nan_loss", "corrupt_backup", "finished_run_reused",
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


def test_a_run_dir_is_checked_for_other_runs(tmp_path):
    """An unfinished run's backup is resumed (auto) or refused (never); a finished run's best
    checkpoint without a backup is refused; an empty run dir is fine."""
    import tensorflow as tf

    from tfbert.checkpoints import RunDirInUse
    from tfbert.trainer import Trainer

    backup_dir = tmp_path / "backup"
    Trainer().check_run_dir(tmp_path, backup_dir)
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.json").write_text("{}")
    with pytest.raises(RunDirInUse, match=f"{tmp_path} holds a finished run .*tfbert.export run_dir={tmp_path}"):
        Trainer().check_run_dir(tmp_path, backup_dir)
    tf.train.CheckpointManager(tf.train.Checkpoint(step=tf.Variable(1)), str(backup_dir / "chief"), 1).save()
    Trainer(resume="auto").check_run_dir(tmp_path, backup_dir)  # the unfinished run continues
    with pytest.raises(RunDirInUse, match=f"{backup_dir} holds an unfinished run; use trainer.resume=auto"):
        Trainer(resume="never").check_run_dir(tmp_path, backup_dir)
