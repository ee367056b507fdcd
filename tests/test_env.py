import os
import subprocess
import sys

import pytest

from tfbert.env import IncompatibleEnvironment, check_environment, installed_versions

GOOD = {
    "tensorflow": "2.21.0",
    "tf-keras": "2.21.0",
    "keras": "3.15.1",
    "tensorflow-text": "2.21.1",
    "transformers": "4.57.6",
}


def test_installed_stack_is_read_and_passes():
    versions = installed_versions()
    assert {"tensorflow", "tf-keras", "tensorflow-text", "transformers"} <= {
        name for name, version in versions.items() if version}
    assert check_environment(versions) is None  # no IncompatibleEnvironment


@pytest.mark.parametrize("changes", [
    {}, {"keras": None},  # Keras 3 beside tf-keras does no harm, nor does its absence
    {"tf-keras": "2.21.3", "tensorflow-text": "2.21.0"},  # only major.minor must match TensorFlow's
    {"transformers": "4.99.0"},
])
def test_good_versions_pass(changes):
    assert check_environment({**GOOD, **changes}) is None


@pytest.mark.parametrize(
    "changes, expected",
    [
        pytest.param({"transformers": "5.0.0"}, "pip install 'transformers>=4.57,<5'", id="transformers_5"),
        pytest.param({"transformers": None}, "pip install 'transformers>=4.57,<5'", id="no_transformers"),
        pytest.param({"tf-keras": None}, "Keras 3.15.1 without tf-keras", id="keras3_only"),
        pytest.param({"tf-keras": "2.20.0"}, "pip install 'tf-keras==2.21.*'", id="tf_keras_mismatch"),
        pytest.param({"tensorflow-text": "2.20.0"}, "pip install 'tensorflow-text==2.21.*'", id="tf_text_mismatch"),
        pytest.param({"tensorflow-text": None}, "no tensorflow-text", id="no_tf_text"),
        pytest.param({"tensorflow": None}, "TensorFlow is not installed", id="no_tensorflow"),
    ],
)
def test_bad_stack_is_one_clear_sentence(changes, expected):
    with pytest.raises(IncompatibleEnvironment) as error:
        check_environment({**GOOD, **changes})
    message = str(error.value)
    assert expected in message
    assert message.count("\n") == 0 and message.endswith(".")


def test_a_run_does_not_import_torch(tmp_path):
    """transformers imports torch whenever one is installed; a tfbert run never needs it.

    A stand-in torch, installed first on the path, announces its import, so the check
    holds whether or not the real one is here; with USE_TORCH=1 (which tfbert leaves as the
    user set it) transformers does import it, which shows the check can see an import.
    """
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("import sys\nsys.stderr.write('stand-in torch imported\\n')\n")
    (tmp_path / "torch-2.13.0.dist-info").mkdir()
    (tmp_path / "torch-2.13.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n")
    code = "import tfbert.train"

    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    unset = {name: value for name, value in os.environ.items() if name != "USE_TORCH"}  # tfbert in this process set it

    def run(**env):
        return subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
            env={**unset, "PYTHONPATH": path, **env},
        )

    guarded = run()
    assert guarded.returncode == 0, guarded.stderr[-2000:]
    assert "stand-in torch imported" not in guarded.stderr
    assert "stand-in torch imported" in run(USE_TORCH="1").stderr
