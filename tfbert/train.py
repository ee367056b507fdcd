"""run(cfg): one fine-tuning run, from task data to metrics.json and a SavedModel."""

import json
import logging
from pathlib import Path

import tf_keras
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tfbert.classifier import build_classifier
from tfbert.evaluation import evaluate
from tfbert.export import export_classifier
from tfbert.pipeline import batch_stats
from tfbert.preprocessing import Preprocessor, load_tokenizer
from tfbert.tasks import TaskData

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Train, evaluate and export as `cfg` says; returns the metrics written to metrics.json."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # What `python -m tfbert.export run_dir=...` rebuilds the model from.
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    tf_keras.utils.set_random_seed(cfg.seed)

    task: TaskData = instantiate(cfg.task)
    log.info("task %s: %s", task.name, {split: len(rows) for split, rows in task.splits.items()})
    tokenized = Preprocessor(load_tokenizer(cfg.model.name_or_path), task.max_length)(task.splits)
    pipeline = instantiate(cfg.pipeline)
    train_data = pipeline(tokenized["train"], training=True)
    validation_data = pipeline(tokenized["validation"])
    test_data = pipeline(tokenized["test"])
    stats = batch_stats(train_data)
    log.info(
        "train batches: %d, padding efficiency %.3f (real tokens / padded tokens)",
        stats["batches"], stats["padding_efficiency"],
    )

    backbone = instantiate(cfg.model)
    head = instantiate(cfg.head)(num_outputs=len(task.label_names))
    model = build_classifier(backbone, head)
    trainer = instantiate(cfg.trainer)
    optimizer = instantiate(cfg.optimizer)(num_train_steps=trainer.epochs * stats["batches"])
    trainer.fit(
        model,
        optimizer,
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf_keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        train_data=train_data,
        validation_data=validation_data,
        run_dir=run_dir,
    )

    metrics = {
        "validation": evaluate(model, validation_data, task.label_names),
        "test": evaluate(model, test_data, task.label_names),
        "train_padding_efficiency": stats["padding_efficiency"],
    }
    write_json(run_dir / "metrics.json", metrics)
    test = metrics["test"]
    log.info("test accuracy %.4f, macro F1 %.4f", test["accuracy"], test["f1_macro"])
    export = export_classifier(model, task, cfg.model.name_or_path, run_dir, instantiate(cfg.export), metrics)
    log.info("metrics: %s; SavedModel: %s", run_dir / "metrics.json", export)
    return metrics


def write_json(path: Path, payload: dict) -> None:
    """Write JSON atomically, so a crash never leaves a half-written file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n")
    partial.replace(path)


