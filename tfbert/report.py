"""The text a finished run ends with: its test metrics and where its artifacts are."""

from pathlib import Path

# What tfbert.evaluation reports, by problem type: single-label, multi-label, regression.
SCORES = (
    "accuracy", "f1_macro", "precision_macro", "recall_macro",
    "subset_accuracy", "f1_micro", "precision_micro", "recall_micro",
    "mse", "mae", "pearson", "spearman",
)


def run_summary(metrics: dict, run_dir: Path, export_dir: Path) -> str:
    """A table of the test and validation scores, then the paths a person looks at next.

    The scores are the SCORES a problem type's metrics hold; `n/a` where one is undefined.
    """
    run_dir = Path(run_dir)
    test, validation = metrics["test"], metrics["validation"]
    scores = [name for name in SCORES if name in test]
    lines = [
        f"results ({test['examples']} test examples):",
        f"  {'metric':<16}  {'test':>8}  {'validation':>10}",
        *(f"  {name:<16}  {score(test[name]):>8}  {score(validation.get(name)):>10}" for name in scores),
        f"training took {metrics['train_seconds']:.0f}s",
        "artifacts:",
        f"  metrics      {run_dir / 'metrics.json'}",
        f"  TensorBoard  tensorboard --logdir {run_dir / 'tensorboard'}",
        f"  checkpoint   {run_dir / 'checkpoints' / 'best.json'} (the best epoch's weights)",
        f"  SavedModel   {export_dir}",
    ]
    return "\n".join(lines)


def score(value) -> str:
    """A metric to 4 decimals; `n/a` where it is undefined (None)."""
    return "n/a" if value is None else f"{value:.4f}"
