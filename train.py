"""Fine-tune a BERT classifier: python train.py task=sentiment head=pooler (see --help)."""

import hydra
from omegaconf import DictConfig

import tfbert  # noqa: F401  (checks the environment before anything heavy is imported)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from tfbert.checks import ConfigError
    from tfbert.run_dir import RunDirInUse
    from tfbert.evaluation import sweep_objective
    from tfbert.run_exit import failures_logged, run_failed, stops_resumable
    from tfbert.train import run
    from tfbert.trainer import NonFiniteLoss

    with failures_logged(), stops_resumable(cfg.run_dir):  # failures into train.log as well
        try:
            return sweep_objective(run(cfg)["validation"])
        except (ConfigError, RunDirInUse, NonFiniteLoss) as error:  # the message says what to do: no traceback
            raise run_failed(f"tfbert: {error}") from None  # in a sweep, the other jobs still run


if __name__ == "__main__":
    main()
