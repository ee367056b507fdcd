"""Fine-tune a BERT classifier: python train.py task=sentiment head=pooler (see --help)."""

import hydra
from omegaconf import DictConfig

import tfbert  # noqa: F401  (checks the environment before anything heavy is imported)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from tfbert.checks import ConfigError
    from tfbert.run_dir import RunDirInUse
    from tfbert.evaluation import sweep_objective
    from tfbert.train import failures_logged, run

    with failures_logged():  # into train.log as well
        try:
            return sweep_objective(run(cfg)["validation"])
        except (ConfigError, RunDirInUse) as error:  # the message says what to change: no traceback needed
            raise SystemExit(f"tfbert: {error}") from None
        except KeyboardInterrupt:  # Ctrl-C outside training (which saves a backup and stops itself)
            raise SystemExit(f"tfbert: interrupted; the same command continues the run in its run dir: "
                             f"add hydra.run.dir={cfg.run_dir}") from None


if __name__ == "__main__":
    main()
