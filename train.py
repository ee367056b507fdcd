"""Fine-tune a BERT classifier: python train.py task=sentiment head=pooler (see --help)."""

import hydra
from omegaconf import DictConfig

import tfbert  # noqa: F401  (checks the environment before anything heavy is imported)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from tfbert.train import run

    validation = run(cfg)["validation"]
    # What hparams_search=optuna maximizes: macro F1, or Pearson r for regression tasks.
    return validation["f1_macro"] if "f1_macro" in validation else validation["pearson"]


if __name__ == "__main__":
    main()
