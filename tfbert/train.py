"""run(cfg): one fine-tuning run, from task data to metrics.json and a SavedModel."""

import json
import logging
from pathlib import Path

import tensorflow as tf
import tf_keras
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tfbert.backbone import check_max_length
from tfbert.callbacks import flat_hparams
from tfbert.checks import ConfigError, check_seed, config_group
from tfbert.checkpoints import finished_export, record_export, remove_backup, write_json
from tfbert.classifier import build_classifier
from tfbert.distribute import all_workers_here, build_strategy, check_global_batch, is_chief, worker_dir
from tfbert.evaluation import evaluate
from tfbert.objectives import loss_and_metrics
from tfbert.export import export_classifier, float32_classifier
from tfbert.features import feature_extraction
from tfbert.pipeline import batch_stats
from tfbert.preprocessing import InGraphTokenizer, Preprocessor, load_tokenizer
from tfbert.report import run_summary
from tfbert.run_dir import check_resumed_data, check_run_dir
from tfbert.tasks import TaskData

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Train, evaluate and export as `cfg` says; returns the metrics written to metrics.json.

    With trainer.strategy=multi_worker every worker runs this; only the chief keeps its
    outputs in cfg.run_dir, the others' go to temporary dirs (see tfbert.distribute).
    """
    try:
        check_seed(seed=cfg.seed)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    trainer = build(cfg, "trainer")  # first: it may switch on op determinism
    pipeline = build(cfg, "pipeline")  # a bad batch size is named before anything else
    # Before any other TensorFlow work: multi_worker configures the TensorFlow runtime.
    with config_group("trainer", cfg.trainer):
        strategy = build_strategy(trainer.strategy, trainer.tpu)
    with config_group("pipeline", cfg.pipeline):
        check_global_batch(pipeline.batch_size, strategy)
    run_dir = Path(cfg.run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SystemExit(f"tfbert: cannot create run_dir {run_dir}: {error.strerror}") from None
    with worker_dir(run_dir, strategy) as output_dir:
        return train_evaluate_export(cfg, trainer, pipeline, strategy, output_dir)


def build(cfg: DictConfig, group: str, **arguments):
    """The object config group `group` describes, called with `arguments` when the group
    builds a partial (head, optimizer, insight); a bad value fails as a ConfigError naming its key."""
    with config_group(group, cfg[group]):
        built = instantiate(cfg[group])
        return built(**arguments) if arguments else built


def train_evaluate_export(cfg: DictConfig, trainer, pipeline, strategy: tf.distribute.Strategy, run_dir: Path) -> dict:
    """The body of run(): this process writes to `run_dir`; the model lives in `strategy`'s scope."""
    backup_dir = Path(cfg.run_dir) / "backup"  # shared by all workers, to resume them together
    check_run_dir(run_dir, backup_dir, trainer.resume, cfg)  # before this run writes anything there
    # Stopped after its export, before removing its backup: finished. Every worker returns
    # here, the chief removing the backup once all of them have read it.
    if exported := finished_export(backup_dir, Path(cfg.run_dir)):
        log.info("the run had finished, its export in %s, when it stopped", exported)
        all_workers_here(strategy)
        if is_chief(strategy):
            remove_backup(backup_dir)
        return json.loads((Path(cfg.run_dir) / "metrics.json").read_text())
    # What `python -m tfbert.export run_dir=...` rebuilds the model from.
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    tf_keras.utils.set_random_seed(cfg.seed)
    exporter = build(cfg, "export")  # a bad export setting fails now, not after training

    task: TaskData = build(cfg, "task")
    # Its variables are made when the classifier calls it, in the strategy's scope; built
    # here, a bad head setting fails before tokenization.
    head = build(cfg, "head", num_outputs=task.num_outputs)
    summary = task.summary()
    log.info("task %s (%s): %s", task.name, task.problem_type, summary["sizes"])
    check_resumed_data(run_dir / "task.json", backup_dir, summary)  # before it is replaced
    write_json(run_dir / "task.json", summary)
    with config_group("model", cfg.model):  # a model that is not there: named before tokenizing
        preprocessor = Preprocessor(load_tokenizer(cfg.model.name_or_path), task.max_length)
        InGraphTokenizer.check_reproducible(preprocessor.tokenizer)  # the export's, before training
    # The model, optimizer, metrics and checkpoints are created in the strategy's scope; the
    # model before tokenizing, so that a setting it refuses fails before any long work.
    with strategy.scope():
        backbone = build(cfg, "model")
        with config_group("task", cfg.task):
            check_max_length(task.max_length, backbone)  # not at the first long batch
        with config_group("head", cfg.head):  # a head that reads more layers than the encoder has
            model = build_classifier(backbone, head)
        with config_group("export", cfg.export):
            exporter.check(backbone, run_dir, task.name)
    # Only its settings checked: the run's optimizer is built once the batches are counted.
    build(cfg, "optimizer", num_train_steps=1, num_layers=backbone.config.num_hidden_layers)

    tokenized = preprocessor(task.splits)
    for split, rows in tokenized.items():
        if truncated := preprocessor.count_truncated(rows):
            log.info("%s: %d of %d examples truncated to max_length %d", split, truncated, len(rows), task.max_length)
    train_data = pipeline(tokenized["train"], training=True)
    validation_data = pipeline(tokenized["validation"])
    test_data = pipeline(tokenized["test"])
    stats = batch_stats(train_data)
    log.info(
        "train batches: %d (%d distinct shapes), padding efficiency %.3f (real tokens / padded tokens)",
        stats["batches"], stats["shapes"], stats["padding_efficiency"],
    )

    with strategy.scope():
        optimizer = build(
            cfg, "optimizer",
            num_train_steps=trainer.optimizer_steps(stats["batches"]), num_layers=backbone.config.num_hidden_layers,
        )
        loss, train_metrics = loss_and_metrics(task.problem_type, task.threshold)
        insight = build(
            cfg, "insight", run_dir=run_dir, backbone=backbone, head=head, tokenizer=preprocessor.tokenizer,
            validation=tokenized["validation"], label_names=task.label_names, problem_type=task.problem_type,
            monitor=trainer.monitor, hparams=flat_hparams(cfg),
        )
        with config_group("trainer", cfg.trainer):
            trainer.checked_monitor(train_metrics, insight)  # before any encoding or training
        fit_model, fit_train, fit_validation = model, train_data, validation_data
        if not backbone.trainable_weights:  # a frozen encoder: encode once, train the head on its outputs
            fit_model, fit_train, fit_validation = feature_extraction(
                backbone, head, pipeline, train_data, validation_data
            )
        history = trainer.fit(
            fit_model,
            optimizer,
            loss=loss,
            metrics=train_metrics,
            train_data=fit_train,
            steps_per_epoch=stats["batches"],
            validation_data=fit_validation,
            run_dir=run_dir,
            class_weight=task.class_weights(),
            callbacks=insight,
            backup_dir=backup_dir,
            checkpoint_model=model,
        )

    label_info = (task.label_names, task.problem_type, task.threshold)
    metrics = {
        "validation": evaluate(model, validation_data, *label_info),
        "test": evaluate(model, test_data, *label_info),
        "train_padding_efficiency": stats["padding_efficiency"],
        "train_seconds": round(history.train_seconds, 1),  # a resumed run's: over all its processes
        "train_epochs": history.epochs_trained,  # fewer than trainer.epochs after early stopping
        "train_precision": trainer.precision,
    }
    write_json(run_dir / "metrics.json", metrics)
    log.info("evaluated (%s); exporting the SavedModel", run_dir / "metrics.json")
    if trainer.precision != "float32":  # the export computes in float32, whatever the run trained in
        trained, model = model, float32_classifier(cfg, task)
        for layer, trained_layer in zip(model.layers, trained.layers):  # not the model's gradient accumulators
            layer.set_weights(trained_layer.get_weights())
    export_dir = exporter.version_dir(run_dir, task.name)
    # So that a stop before the backup's removal does not export the run again.
    export_id = record_export(backup_dir, run_dir, export_dir) if is_chief(strategy) else None
    export = export_classifier(model, task, cfg.model.name_or_path, run_dir, exporter, metrics, export_dir, export_id)
    if not is_chief(strategy):  # its outputs went to a temporary dir, deleted on return
        log.info("done; this worker keeps no outputs: the chief's run dir %s holds the run's", cfg.run_dir)
        return metrics
    remove_backup(backup_dir)  # the run is done
    log.info("%s", run_summary(metrics, run_dir, export))
    return metrics
