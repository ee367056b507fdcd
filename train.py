"""Fine-tune a BERT classifier: python train.py task=sentiment head=pooler (see --help)."""

import hydra
from omegaconf import DictConfig

import tfbert  # noqa: F401  (checks the environment before anything heavy is imported)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from tfbert.train import run

    metrics = run(cfg)
    return metrics["validation"]["f1_macro"]  # what hparams_search=optuna maximizes


if __name__ == "__main__":
    main()
