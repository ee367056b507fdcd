"""Each fault-injection scenario of tests/faults.py: observed as expected, no data lost."""

import pytest

from tests import faults


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(
    "scenario", faults.SCENARIOS,
    ids=["sigkill_resume", "sigterm_resume", "sigint_resume", "nan_loss", "corrupt_backup", "interrupted_best_write",
         "full_disk", "unwritable_run_dir"],
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
