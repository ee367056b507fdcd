"""Callbacks that show what a model learns, for `Trainer.fit(callbacks=...)`.

Under <run_dir>/tensorboard/ (next to Keras' own train/ and validation/ scalars):
    .                     HParams dashboard: the run's hyperparameters and best-epoch metrics
    validation_insights/  per epoch: confusion matrix, PR curves, misclassified examples,
                          what [CLS] attends to in the last layer
    projector/            pooled features of validation examples, labelled (best epoch)
and one readable log line per epoch, with a bar over its steps in a terminal (ProgressLogger).
"""

import logging
import time
from pathlib import Path

import datasets
import numpy as np
import tensorflow as tf
import tf_keras
from omegaconf import DictConfig, OmegaConf
from sklearn.metrics import confusion_matrix, f1_score
from tensorboard.plugins import projector
from tensorboard.plugins.hparams import api as hparams_api
from tensorboard.plugins.pr_curve import summary as pr_curve_summary
from tqdm import tqdm
from transformers import PreTrainedTokenizerBase

from tfbert.checkpoints import best_so_far
from tfbert.checks import check_flags, is_whole_number
from tfbert.classifier import INPUT_NAMES, encoder_features, in_slices
from tfbert.figures import attention_figure, confusion_matrix_figure, png_bytes
from tfbert.heads import ClassificationHead
from tfbert.objectives import BestEpoch
from tfbert.tasks.task_data import column

log = logging.getLogger(__name__)

# The config nodes whose values are a run's hyperparameters (plus `seed`).
HPARAM_NODES = ("task", "model", "head", "optimizer", "trainer", "pipeline")


def flat_hparams(cfg: DictConfig) -> dict:
    """Scalar values of the hyperparameter nodes as `{"optimizer.learning_rate": 5e-05, ...}`.

    A node's `_target_` becomes `{node: <last dotted name>}`, e.g. `head: MeanPoolingHead`.
    """
    hparams = {"seed": cfg.seed}
    for node in HPARAM_NODES:
        _flatten(OmegaConf.to_container(cfg[node], resolve=True), node, hparams)
    return hparams


def _flatten(values: dict, prefix: str, into: dict) -> None:
    for key, value in values.items():
        if key == "_target_":
            into[prefix] = value.rsplit(".", 1)[-1]
        elif isinstance(value, dict):
            _flatten(value, f"{prefix}.{key}", into)
        elif isinstance(value, (bool, int, float, str)) and not key.startswith("_"):
            into[f"{prefix}.{key}"] = value


class ProgressLogger(tf_keras.callbacks.Callback):
    """The run's progress: one log line per epoch (its metrics, how long it took, the time
    left) and, in a terminal, a bar over the epoch's steps that clears itself at the end.

    It `shows_progress`: Trainer then turns Keras' own progress output off (both would
    print every epoch, and Keras' bar would run into the log line).
    """

    shows_progress = True

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        self.epochs_run = 0  # in this process: a resumed run starts past epoch 0
        self.bar = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started = time.perf_counter()
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        # batch: the step's index in the epoch (under steps_per_execution, the last one run)
        if self.bar is None:
            # Started at the first call, from the steps done by then: a resumed epoch's skipped
            # steps (and the first call's tracing) do not count towards the rate and time left.
            # disable=None: a bar only on a terminal; a log file gets the epoch line alone.
            self.bar = tqdm(
                total=self.params["steps"], initial=batch + 1, desc=f"epoch {self.epoch + 1}/{self.params['epochs']}",
                unit="step", leave=False, disable=None, dynamic_ncols=True,
            )
        self.bar.update(batch + 1 - self.bar.n)
        if logs and "loss" in logs:
            self.bar.set_postfix_str(f"loss {logs['loss']:.4f}", refresh=False)

    def on_epoch_end(self, epoch, logs=None):
        self._close_bar()
        if self.model.stop_training:
            return  # an epoch cut short (SIGTERM, Ctrl-C, NaN): its own message follows
        now = time.perf_counter()
        self.epochs_run += 1
        done, epochs = epoch + 1, self.params["epochs"]
        left = (now - self.started) / self.epochs_run * (epochs - done)
        scores = "  ".join(f"{name} {value:.4f}" for name, value in (logs or {}).items())
        log.info(
            "epoch %d/%d  %s  %s  about %s left",
            done, epochs, duration(now - self.epoch_started), scores, duration(left),
        )

    def on_train_end(self, logs=None):
        self._close_bar()  # training stopped inside an epoch

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def duration(seconds: float) -> str:
    """`42s`, `3m05s` or `1h02m`."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class HParamsLogger(tf_keras.callbacks.Callback):
    """A run for TensorBoard's HParams dashboard: hyperparameters, then best-epoch metrics.

    The best epoch (by `monitor`) is the one Trainer restores, so its `val_*` values are
    written as `best/val_*` scalars: the metrics the dashboard compares runs by.

    Args:
        log_dir: the run's TensorBoard dir (Keras' train/ and validation/ sit below it).
        hparams: name -> bool, int, float or str.
        monitor: validation metric that picks the best epoch (see BestEpoch).
        checkpoint_dir: the run's checkpoints: a resumed run's best epoch so far (best.json)
            is the one later epochs must beat, and its logs the best ones until then.
    """

    def __init__(self, log_dir: Path, hparams: dict, monitor: str | None, checkpoint_dir: Path | None = None):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.hparams = hparams
        self.monitor = monitor
        self.checkpoint_dir = checkpoint_dir

    def on_train_begin(self, logs=None):
        best = best_so_far(self.checkpoint_dir) or {}
        self.tracker = BestEpoch(self.monitor, best=best.get("value"))
        self.best_epoch, self.best_logs = best.get("epoch", 1) - 1, best.get("logs", {})
        self.writer = tf.summary.create_file_writer(str(self.log_dir))
        with self.writer.as_default(), tf.summary.record_if(True):
            hparams_api.hparams(self.hparams)

    def on_epoch_end(self, epoch, logs=None):
        if self.tracker.update(logs or {}):
            self.best_epoch, self.best_logs = epoch, dict(logs)

    def on_train_end(self, logs=None):
        with self.writer.as_default(), tf.summary.record_if(True):
            for name, value in self.best_logs.items():
                if name.startswith("val_"):
                    tf.summary.scalar(f"best/{name}", value, step=self.best_epoch)
        self.writer.close()


class ValidationInsights(tf_keras.callbacks.Callback):
    """After each epoch, what the model does on validation examples, for TensorBoard.

    It is the run's validation: one forward pass over the split gives the epoch's logs
    `val_loss`, the compiled metrics (`val_accuracy`, ...) and `val_f1_macro` (so Keras'
    TensorBoard, the checkpoint and the progress line see them; Trainer skips Keras' own
    validation pass when a callback `validates`; under a strategy other than one_device
    Keras' pass stays and this one adds `val_f1_macro`), and writes to `log_dir`:
        confusion_matrix            image, true labels as rows
        pr_curve_<label>/pr_curves  one-vs-rest precision-recall curve per label
        misclassified               table of text, true label, predicted label, probability
        attention_cls_last_layer    for the first `attention_maps` examples, what [CLS]
                                    attends to in the last layer, per head
    (Keras' TensorBoard callback records only every `update_freq` steps while training;
    these summaries are recorded regardless) and, when `monitor` improves, the pooled features of the first `max_examples`
    examples to `projector_dir` for the Embedding Projector, labelled.

    It calls `backbone` and `head` itself, in the split's own order (Keras' validation
    data is length-bucketed), and assumes one label per example (softmax over logits).

    Args:
        backbone: the classifier's TFBertModel.
        head: the classifier's head; `head.pool` gives the projector's features.
        tokenizer: the backbone's tokenizer (token names on attention maps).
        validation: tokenized validation split: text, label, input_ids, token_type_ids.
        label_names: class names in label-id order.
        log_dir: where the per-epoch summaries go.
        projector_dir: where the projector checkpoint, metadata and config go.
        monitor: validation metric that says which epoch is best (see BestEpoch).
        checkpoint_dir: the run's checkpoints: a resumed run's best epoch so far (best.json)
            is the one later epochs must beat for the projector.
        max_examples: misclassified examples and projector points shown, at most.
        attention_maps: validation examples with an attention map (0: none).
        batch_size: examples per forward pass.
    """

    # The epoch-log keys it adds to Keras' (Trainer.fit checks trainer.monitor against them).
    logged_metrics = ("val_f1_macro",)

    def __init__(
        self,
        backbone: tf_keras.Model,
        head: ClassificationHead,
        tokenizer: PreTrainedTokenizerBase,
        validation: datasets.Dataset,
        label_names,
        log_dir: Path,
        projector_dir: Path,
        monitor: str | None,
        checkpoint_dir: Path | None = None,
        max_examples: int = 200,
        attention_maps: int = 4,
        batch_size: int = 64,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.tokenizer = tokenizer
        self.texts = column(validation, "text")
        self.labels = np.asarray(column(validation, "label"))
        self.token_ids = column(validation, "input_ids")
        self.type_ids = column(validation, "token_type_ids")
        self.label_names = list(label_names)
        self.log_dir = Path(log_dir)
        self.projector_dir = Path(projector_dir)
        self.monitor = monitor
        self.checkpoint_dir = checkpoint_dir
        self.max_examples = max_examples
        self.attention_maps = attention_maps
        self.batch_size = batch_size
        # In the fitted model's parallel slices (tfbert.classifier.Classifier), like its own steps.
        self.encode = tf.function(
            lambda tokens: in_slices(
                lambda rows: encoder_features(
                    backbone, rows, hidden_states="hidden_states" in head.reads, cls_only=head.reads_cls_only
                ),
                getattr(self.model, "parallel_slices", 1),
                tokens,
            ),
            reduce_retracing=True,
        )
        self.apply_head = tf.function(
            lambda features: (head(features, training=False), head.pool(features)), reduce_retracing=True
        )
        self._frozen_features = {}  # a frozen encoder's outputs per batch, computed once

    def on_train_begin(self, logs=None):
        self.tracker = BestEpoch(self.monitor, best=(best_so_far(self.checkpoint_dir) or {}).get("value"))
        self.writer = tf.summary.create_file_writer(str(self.log_dir))

    def on_train_end(self, logs=None):
        self.writer.close()

    def on_epoch_end(self, epoch, logs=None):
        if self.model.stop_training:
            return  # an epoch cut short (SIGTERM, Ctrl-C, NaN): the rerun that resumes it validates it
        logits, pooled = self.predict()
        probabilities = tf.nn.softmax(logits).numpy()  # (examples, classes)
        predicted = probabilities.argmax(axis=-1)
        classes = list(range(len(self.label_names)))
        # Over the classes the labels or predictions hold, as tfbert.evaluation's f1_macro.
        f1_macro = f1_score(self.labels, predicted, average="macro", zero_division=0)
        if logs is not None:
            if self.validates:
                logs.update(self.validation_logs(logits))
            logs["val_f1_macro"] = float(f1_macro)
        with self.writer.as_default(step=epoch), tf.summary.record_if(True):
            matrix = confusion_matrix(self.labels, predicted, labels=classes)
            self._write_images("confusion_matrix", [confusion_matrix_figure(matrix, self.label_names)])
            for label, name in enumerate(self.label_names):
                curve = pr_curve_summary.pb(
                    f"pr_curve_{name}", self.labels == label, probabilities[:, label].astype(np.float32)
                )
                tf.summary.experimental.write_raw_pb(curve.SerializeToString())
            tf.summary.text("misclassified", self._misclassified_table(predicted, probabilities))
            if self.attention_maps:
                self._write_images("attention_cls_last_layer", self._attention_figures())
        if self.tracker.update(logs or {}) and self.max_examples:
            self._write_projector(pooled[: self.max_examples], predicted[: self.max_examples])

    @property
    def validates(self) -> bool:
        """Whether its pass is the run's validation (see Trainer.fit): without a tf.distribute
        strategy, or with one device. Over several replicas Keras' own pass is left to
        validate: it runs on all of them, and their metrics only sum up inside it."""
        strategy = tf.distribute.get_strategy()
        return not tf.distribute.has_strategy() or isinstance(strategy, tf.distribute.OneDeviceStrategy)

    def validation_logs(self, logits: np.ndarray) -> dict:
        """`val_loss` and `val_<metric>` of the compiled loss and metrics on these logits,
        as Keras' validation pass would log them (the mean over examples)."""
        labels, logits = tf.constant(self.labels), tf.constant(logits)
        self.model.reset_metrics()  # the epoch's training values are in the logs already
        self.model.compute_loss(y=labels, y_pred=logits)
        results = self.model.compute_metrics(None, labels, logits, None)
        return {f"val_{name}": float(value) for name, value in results.items()}

    def _forward(self, start: int, indices) -> tuple[tf.Tensor, tf.Tensor]:
        """(logits (batch, classes), pooled features (batch, features)) of the examples at `indices`.

        When no encoder weight trains (feature extraction), its outputs are kept after the
        first epoch and only the head runs again.
        """
        features = self._frozen_features.get(start)
        if features is None:
            features = self.encode(self._padded(indices))
            if not self.backbone.trainable_weights:
                self._frozen_features[start] = features
        return self.apply_head(features)

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """(logits (examples, classes), pooled features (examples, features)) in split order,
        float32 whatever the model computed in (matplotlib and the projector take no bfloat16)."""
        order = np.argsort([len(ids) for ids in self.token_ids], kind="stable")  # little padding
        logits, pooled = None, None
        for start in range(0, len(order), self.batch_size):
            indices = order[start : start + self.batch_size]
            batch_logits, batch_pooled = (outputs.numpy() for outputs in self._forward(start, indices))
            if logits is None:
                logits = np.empty((len(order), *batch_logits.shape[1:]), np.float32)
                pooled = np.empty((len(order), *batch_pooled.shape[1:]), np.float32)
            logits[indices], pooled[indices] = batch_logits, batch_pooled
        return logits, pooled

    def _padded(self, indices) -> dict:
        """int32 (batch, longest) token tensors of the examples at `indices`, zero-padded."""
        longest = max(len(self.token_ids[index]) for index in indices)
        arrays = {name: np.zeros((len(indices), longest), np.int32) for name in INPUT_NAMES}
        for row, index in enumerate(indices):
            length = len(self.token_ids[index])
            arrays["input_ids"][row, :length] = self.token_ids[index]
            arrays["token_type_ids"][row, :length] = self.type_ids[index]
            arrays["attention_mask"][row, :length] = 1
        return {name: tf.constant(array) for name, array in arrays.items()}

    def _write_images(self, tag: str, figures: list) -> None:
        images = tf.stack([tf.image.decode_png(png_bytes(figure), channels=4) for figure in figures])
        tf.summary.image(tag, images, max_outputs=len(figures))

    def _misclassified_table(self, predicted: np.ndarray, probabilities: np.ndarray) -> str:
        wrong = np.flatnonzero(predicted != self.labels)[: self.max_examples]
        if not len(wrong):
            return "Every validation example is classified correctly."
        rows = [
            f"| {markdown_cell(self.texts[index])} | {self.label_names[self.labels[index]]} "
            f"| {self.label_names[predicted[index]]} | {probabilities[index, predicted[index]]:.3f} |"
            for index in wrong
        ]
        header = f"the first {len(wrong)} of {np.sum(predicted != self.labels)} misclassified validation examples\n\n"
        return header + "| text | true | predicted | probability |\n|---|---|---|---|\n" + "\n".join(rows)

    def _attention_figures(self) -> list:
        indices = range(min(self.attention_maps, len(self.token_ids)))
        figures = []
        for index, weights in zip(indices, self.cls_attention(indices)):
            tokens = self.tokenizer.convert_ids_to_tokens(self.token_ids[index])
            title = f"[CLS] attention, last layer: {self.texts[index][:100]}"
            figures.append(attention_figure(tokens, weights, title))
        return figures

    def cls_attention(self, indices) -> list[np.ndarray]:
        """What [CLS] attends to in the last layer, (heads, length) float32 per example at `indices`.

        One call over the examples padded together: padding gets no attention, so each
        example's row over its own tokens is what a call on it alone gives.
        """
        indices = list(indices)
        encoded = self.backbone(**self._padded(indices), output_attentions=True, training=False)
        rows = encoded.attentions[-1][:, :, 0, :].numpy().astype(np.float32)  # (examples, heads, longest)
        return [rows[row, :, : len(self.token_ids[index])] for row, index in enumerate(indices)]

    def _write_projector(self, pooled: np.ndarray, predicted: np.ndarray) -> None:
        self.projector_dir.mkdir(parents=True, exist_ok=True)
        rows = ["text\tlabel\tpredicted"] + [
            f"{' '.join(self.texts[index].split())}\t{self.label_names[self.labels[index]]}"
            f"\t{self.label_names[predicted[index]]}"
            for index in range(len(pooled))
        ]
        (self.projector_dir / "metadata.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        checkpoint = tf.train.Checkpoint(embedding=tf.Variable(pooled, name="pooled_features"))
        tf.train.CheckpointManager(checkpoint, str(self.projector_dir), max_to_keep=1).save()
        config = projector.ProjectorConfig()
        embedding = config.embeddings.add()
        embedding.tensor_name = "embedding/.ATTRIBUTES/VARIABLE_VALUE"
        embedding.metadata_path = "metadata.tsv"
        projector.visualize_embeddings(str(self.projector_dir), config)
        # TensorBoard's projector reads only the dirs it lists as runs: those with an event file.
        tf.summary.create_file_writer(str(self.projector_dir)).close()


def markdown_cell(text: str) -> str:
    """`text` on one line, safe inside a markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def insight_callbacks(
    run_dir: Path,
    backbone: tf_keras.Model,
    head: ClassificationHead,
    tokenizer: PreTrainedTokenizerBase,
    validation: datasets.Dataset,
    label_names,
    problem_type: str,
    monitor: str | None,
    hparams: dict,
    progress: bool = True,
    hparams_dashboard: bool = True,
    validation_insights: bool = True,
    max_examples: int = 200,
    attention_maps: int = 4,
) -> list[tf_keras.callbacks.Callback]:
    """The callbacks the `insight` config node switches on, in the order they must run.

    Args (up to `hparams`: from the run; the rest: from conf/config.yaml `insight`):
        run_dir: the run's output dir; everything goes under run_dir/tensorboard.
        backbone, head, tokenizer: the classifier's parts (see ValidationInsights).
        validation: the tokenized validation split, with its text column.
        label_names: class names in label-id order.
        problem_type: the task's; validation insights cover `single_label` tasks only.
        monitor: the trainer's checkpoint metric, e.g. `val_accuracy` (None: its default).
        hparams: the run's hyperparameters (flat_hparams of the config).
        progress: log one line per epoch with metrics and time left.
        hparams_dashboard: log hparams and best-epoch metrics for the HParams dashboard.
        validation_insights: confusion matrix, PR curves, misclassified examples,
            attention maps and the projector, each epoch on validation.
        max_examples: misclassified examples and projector points, at most (0: none).
        attention_maps: validation examples with an attention map (0: none).
    """
    for name, value in (("max_examples", max_examples), ("attention_maps", attention_maps)):
        if not is_whole_number(value, 0):
            raise ValueError(f"insight.{name} must be a whole number, 0 or more (0: none), got {value!r}")
    check_flags(**{f"insight.{name}": flag for name, flag in (
        ("progress", progress), ("hparams_dashboard", hparams_dashboard), ("validation_insights", validation_insights)
    )})
    log_dir, checkpoint_dir = Path(run_dir) / "tensorboard", Path(run_dir) / "checkpoints"
    callbacks = []
    # ValidationInsights adds val_f1_macro to the epoch logs the later ones read.
    if validation_insights and problem_type != "single_label":
        log.info("validation insights cover single_label tasks; none for this %s task", problem_type)
    elif validation_insights:
        callbacks.append(ValidationInsights(
            backbone, head, tokenizer, validation, label_names,
            log_dir=log_dir / "validation_insights", projector_dir=log_dir / "projector",
            monitor=monitor, checkpoint_dir=checkpoint_dir, max_examples=max_examples, attention_maps=attention_maps,
        ))
    if hparams_dashboard:
        callbacks.append(HParamsLogger(log_dir, hparams, monitor, checkpoint_dir))
    if progress:
        callbacks.append(ProgressLogger())
    return callbacks
