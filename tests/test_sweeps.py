"""Sweep configs: the head comparison experiment and the Optuna hyperparameter search compose."""

from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from tests.conftest import ROOT


def compose_with_hydra(*overrides: str):
    """The composed config including its `hydra` node (sweeper, mode)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def test_compare_heads_sweeps_every_head_and_three_seeds():
    cfg = compose_with_hydra("experiment=compare_heads")
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.params == {"head": "pooler,cls,mean,max", "seed": "1,2,3"}
    heads = {path.stem for path in (ROOT / "conf" / "head").glob("*.yaml")}
    assert set(cfg.hydra.sweeper.params.head.split(",")) <= heads


def test_optuna_search_maximizes_over_the_tuned_keys():
    cfg = compose_with_hydra("hparams_search=optuna")
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert cfg.hydra.mode == RunMode.MULTIRUN and sweeper.direction == "maximize"
    assert 0 < sweeper.max_failure_rate < 1  # a failed trial (a NaN loss) does not end the search
    assert set(sweeper.params) == {"optimizer.learning_rate", "pipeline.batch_size", "head", "head.dropout"}
    # every tuned key exists in the run config, so each trial's overrides apply
    for key in sweeper.params:
        assert OmegaConf.select(cfg, key) is not None, key


def test_a_sweep_jobs_dir_name_holds_no_path():
    """A sweep job's dir is named by its overrides; a data file's or model's path in it would
    nest the dir (0_head=cls,task.train_file=/ then tmp/ ...)."""
    cfg = compose_with_hydra("head=cls", "task=files", "task.train_file=/data/train.csv", "task.test_file=../test.csv",
                             "model.name_or_path=/models/bert", "seed=1")
    assert cfg.hydra.job.override_dirname == "head=cls,seed=1,task=files"


def test_a_failed_job_leaves_the_rest_of_the_sweep_to_run(snippets_file, tmp_path):
    """A job that a single run would end in one line (here a bad head.dropout) fails alone:
    Hydra records it and runs the next job; the sweep's exit code says one failed."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "train.py", "-m", "model=tiny", f"task.data_file={snippets_file}", "task.max_train_samples=32",
         "trainer.epochs=1", "insight.validation_insights=false", "head.dropout=1.5,0.1", f"hydra.sweep.dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 1
    failed, trained = sorted(tmp_path.glob("*_head.dropout=*"))
    assert "tfbert: head.dropout must be a rate in [0, 1), got 1.5" in (failed / "train.log").read_text()
    assert not (failed / "metrics.json").exists() and (trained / "metrics.json").is_file()
