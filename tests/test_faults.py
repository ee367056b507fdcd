"""Each fault-injection scenario of tests/faults.py: observed as expected, no data lost."""

import pytest

from tests import faults


@pytest.fixture(scope="module")
def space(tmp_path_factory):
    return faults.Workspace(tmp_path_factory.mktemp("faults"))


@pytest.mark.parametrize(
    "scenario", faults.SCENARIOS,
    ids=["sigkill_resume", "sigterm_resume", "nan_loss", "corrupt_backup", "interrupted_best_write",
         "full_disk", "unwritable_run_dir"],
)
def test_scenario(scenario, space):
    result = scenario(space)
    assert result["observed"] == result["expected"]
    assert result["data lost"] == "none"
