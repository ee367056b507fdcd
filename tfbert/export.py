"""SavedModel export for TensorFlow Serving: raw text in, labels and probabilities out.

Layout (what TF Serving's --model_base_path expects):

    <export_dir>/<name>/<version>/saved_model.pb, variables/, model_card.md (.tfbert-export-id from a run)

Each version is written to a hidden temporary sibling and renamed into place, so a
server never sees half an export; an existing version is never overwritten. Serving
the export needs tensorflow and tensorflow_text only (`import tensorflow_text` before
`tf.saved_model.load`, to register the tokenizer ops).

Re-export a finished run (its config.yaml, task.json and best checkpoint, checkpoints/best.json):

    python -m tfbert.export run_dir=outputs/... [export.name=sentiment] [export.version=2]
"""

import inspect
import json
import shutil
import sys
import tempfile
from pathlib import Path

import tensorflow as tf
import tf_keras
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tfbert.checkpoints import EXPORT_ID, best_checkpoint
from tfbert.checks import config_group, is_whole_number
from tfbert.classifier import INPUT_NAMES, build_classifier, classifier_parts
from tfbert.model_card import ModelCard
from tfbert.packed import branch_weights, check_branches, packed_encoder_features
from tfbert.preprocessing import TEXT_COLUMNS, InGraphTokenizer, load_tokenizer
from tfbert.tasks import TaskData, TaskSpec
from tfbert.tasks.task_data import PROBLEM_TYPES


class ServingModule(tf.Module):
    """What the SavedModel serves; both signatures return the same outputs.

    `serving_default`: string `text` (batch,) [and `text_pair` (batch,)], tokenized in the
        graph; the encoder runs on the real tokens only (tfbert.packed), so a request of
        mixed lengths costs no padding, its top layer on [CLS] alone for heads that
        read only [CLS], and each layer as `branches` parallel branches (its attention
        heads and feed-forward units cut into runs); the module holds each branch's columns
        of the weights (a copy made when it is built: build it from the trained model).
    `serve_ids`: int32 `input_ids`, `attention_mask`, `token_type_ids` (batch, seq).
    Outputs, by problem type:
        single_label: `logits`, `probabilities` (softmax) float32 (batch, classes),
            `label_id` int32 (batch,), `label` string (batch,).
        multi_label: the same with sigmoid `probabilities`, `label` the most probable
            class, plus `predicted` bool (batch, classes): probabilities >= threshold.
        regression: `logits` float32 (batch, 1) and `value` float32 (batch,).

    Args:
        model: the classifier build_classifier made (dict of int32 token tensors -> logits).
        tokenizer: the in-graph twin of the tokenizer the model was trained with.
        label_names: class names in label-id order (for regression, the target's name).
        text_columns: the string inputs of `serving_default`: ("text",) or ("text", "text_pair").
        problem_type: `single_label`, `multi_label` or `regression`.
        threshold: multi_label decision threshold on each class probability.
        branches: parallel branches of each served encoder layer, one per core of the
            serving machine when served with one thread per op (README: Serving).
    """

    def __init__(
        self,
        model: tf_keras.Model,
        tokenizer: InGraphTokenizer,
        label_names,
        text_columns=("text",),
        problem_type: str = "single_label",
        threshold: float = 0.5,
        branches: int = 2,
    ):
        super().__init__()
        if tuple(text_columns) not in (TEXT_COLUMNS[:1], TEXT_COLUMNS):
            raise ValueError(f"text_columns must be ('text',) or ('text', 'text_pair'), got {text_columns!r}")
        if problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {list(PROBLEM_TYPES)}, got {problem_type!r}")
        self.tokenizer = tokenizer
        # A variable, not a constant: a loaded export names its classes (tfbert.predict's CSV columns).
        self.label_names = tf.Variable(list(label_names), trainable=False, name="label_names")
        self.text_columns = tuple(text_columns)
        self.problem_type = problem_type
        self.threshold = threshold
        # The SavedModel keeps the weights the signatures read, not the Keras objects: saving
        # a Keras model also traces each of its layers for Keras' own loader, which serving
        # never uses (seconds more to write and to load). So only the functions hold the model,
        # and the module its layers' weights (not a model's own variables: gradient accumulators).
        self.weights = [weight for layer in model.layers for weight in layer.weights]
        backbone, head = classifier_parts(model)
        self.branches = [[{name: tf.Variable(tensor, trainable=False, name=name) for name, tensor in part.items()}
                          for part in layer] for layer in branch_weights(backbone, branches)]

        def serve_text(*texts):
            input_ids, token_type_ids = tokenizer.rows(*texts)
            features = packed_encoder_features(
                backbone,
                input_ids,
                token_type_ids,
                hidden_states="hidden_states" in head.reads,
                cls_only=head.reads_cls_only,
                branches=self.branches,
            )
            return self._outputs(head(features, training=False))

        def serve_ids(input_ids, attention_mask, token_type_ids):
            tokens = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            return self._outputs(model(tokens, training=False))

        self.serve_text = tf.function(
            serve_text, input_signature=[tf.TensorSpec([None], tf.string, name=name) for name in self.text_columns]
        )
        self.serve_ids = tf.function(
            serve_ids, input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES]
        )

    def _outputs(self, logits: tf.Tensor) -> dict:
        logits = tf.cast(logits, tf.float32)  # (batch, outputs)
        if self.problem_type == "regression":
            return {"logits": logits, "value": logits[:, 0]}
        probabilities = tf.nn.softmax(logits) if self.problem_type == "single_label" else tf.sigmoid(logits)
        label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)  # (batch,)
        outputs = {
            "logits": logits,
            "probabilities": probabilities,
            "label_id": label_id,
            "label": tf.gather(self.label_names, label_id),
        }
        if self.problem_type == "multi_label":
            outputs["predicted"] = probabilities >= self.threshold  # (batch, classes)
        return outputs

    def signatures(self) -> dict:
        return {"serving_default": self.serve_text, "serve_ids": self.serve_ids}


class Exporter:
    """Writes a ServingModule in TF Serving's layout, `<export_dir>/<name>/<version>/`.

    Args:
        export_dir: root of the layout; None: `<run_dir>/export`.
        name: the model name TF Serving serves it under; None: the task name.
        version: a positive integer; None: one above the highest version present
            (1 for the first export). An existing version is an error, never overwritten.
        branches: the ServingModule's `branches`: parallel branches of each served encoder
            layer, best the serving machine's core count, at most the encoder's attention
            heads (README: Serving).
    """

    def __init__(
        self, export_dir: str | None = None, name: str | None = None, version: int | None = None, branches: int = 2
    ):
        if name is not None and (not name or "/" in name or name.startswith(".")):
            raise ValueError(f"export.name must be a plain directory name, got {name!r}")
        if version is not None and not is_whole_number(version, 1):
            raise ValueError(f"export.version must be a positive integer (TF Serving's layout), got {version!r}")
        if not is_whole_number(branches, 1):
            raise ValueError(f"export.branches must be a positive integer (best: the serving machine's cores), got {branches!r}")
        self.export_dir = export_dir
        self.name = name
        self.version = version
        self.branches = branches

    def check(self, backbone: tf_keras.Model, run_dir: Path, task_name: str) -> None:
        """Fail now, not after training or loading: more `branches` than `backbone`'s attention
        heads, or a `version` already taken."""
        check_branches(backbone, self.branches, "export.branches")
        try:
            self.version_dir(run_dir, task_name)
        except FileExistsError as error:
            raise ValueError(f"export.version={self.version}: {error}") from None

    def version_dir(self, run_dir: Path, task_name: str) -> Path:
        """`<export_dir>/<name>/<version>`, which must not exist yet."""
        model_dir = Path(self.export_dir or Path(run_dir) / "export") / (self.name or task_name)
        versions = [int(path.name) for path in model_dir.glob("*") if path.name.isdigit()]
        version = self.version if self.version is not None else max(versions, default=0) + 1
        directory = model_dir / str(version)
        if directory.exists():
            raise FileExistsError(
                f"{directory} already exists; refusing to overwrite version {version} of "
                f"{model_dir.name!r}. Pass another export.version, or leave it unset for the next free one."
            )
        return directory

    def __call__(
        self, module: ServingModule, card: ModelCard, run_dir: Path, directory: Path | None = None,
        export_id: str | None = None,
    ) -> Path:
        """Save `module` with `card` as model_card.md beside it, in `directory` (default:
        version_dir, the next free version), with `export_id` in its EXPORT_ID file if
        given (tfbert.checkpoints.record_export); returns the version directory."""
        directory = Path(directory or self.version_dir(run_dir, card.task))
        model_dir = directory.parent
        model_dir.mkdir(parents=True, exist_ok=True)
        for stale in model_dir.glob(f".{directory.name}-*"):  # an attempt at this version killed midway
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=model_dir))
        try:
            tf.saved_model.save(module, str(staging), signatures=module.signatures())
            (staging / "model_card.md").write_text(card.render(tf.saved_model.load(str(staging)), model_dir.name))
            if export_id is not None:
                (staging / EXPORT_ID).write_text(export_id)
            staging.rename(directory)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return directory


def export_classifier(
    model: tf_keras.Model,
    task: TaskData | TaskSpec,
    backbone_name: str,
    run_dir: Path,
    exporter: Exporter | None = None,
    metrics: dict | None = None,
    directory: Path | None = None,
    export_id: str | None = None,
) -> Path:
    """Export a trained classifier of `task`, tokenizing as backbone `backbone_name` does,
    into `directory` (default: the exporter's next version directory), holding `export_id`
    if given (see Exporter).

    Returns the version directory, e.g. `<run_dir>/export/sentiment/1`.
    """
    tokenizer = InGraphTokenizer.from_tokenizer(load_tokenizer(backbone_name), task.max_length)
    text_columns = TEXT_COLUMNS if task.has_pairs else TEXT_COLUMNS[:1]
    exporter = exporter or Exporter()
    module = ServingModule(
        model, tokenizer, task.label_names, text_columns, task.problem_type, task.threshold, exporter.branches
    )
    card = ModelCard.describe(model, task, backbone_name, metrics, exporter.branches)
    return exporter(module, card, run_dir, directory, export_id)


def float32_classifier(cfg: DictConfig, task: TaskData | TaskSpec) -> tf_keras.Model:
    """A run's classifier (its config's model and head) with float32 layers and random weights.

    What an export serves whatever precision the run trained in: give it the trained
    weights (set_weights or load_weights) and export it.
    """
    policy = tf_keras.mixed_precision.global_policy()
    tf_keras.mixed_precision.set_global_policy("float32")
    try:
        backbone = instantiate(cfg.model, random_init=True)
        return build_classifier(backbone, instantiate(cfg.head)(num_outputs=task.num_outputs))
    finally:
        tf_keras.mixed_precision.set_global_policy(policy)


def load_run_config(run_dir: Path) -> DictConfig:
    """The composed config of a finished run: `config.yaml`, else Hydra's `.hydra/config.yaml`."""
    for path in (run_dir / "config.yaml", run_dir / ".hydra" / "config.yaml"):
        if path.is_file():
            cfg = OmegaConf.load(path)
            cfg.run_dir = str(run_dir)
            return cfg
    raise FileNotFoundError(f"{run_dir} holds no config.yaml or .hydra/config.yaml: is it a tfbert run dir?")


def export_run(run_dir: str | Path, **export_args) -> Path:
    """Rebuild a finished run's classifier from its config and best checkpoint, then export it.

    `export_args` override the run's `export` config (export_dir, name, version, branches).
    The task's labels and settings come from the run's task.json: no data is read.
    """
    run_dir = Path(run_dir)
    cfg = load_run_config(run_dir)
    checkpoint = best_checkpoint(run_dir)
    task = TaskSpec.read(run_dir / "task.json")  # the labels it trained with; no data read
    export_cfg = OmegaConf.merge({"_target_": f"{__name__}.Exporter"}, cfg.get("export") or {}, export_args)
    with config_group("export", export_cfg):  # a bad value: one line naming its key
        exporter = instantiate(export_cfg)
    # The architecture comes from the config; every weight comes from the checkpoint.
    model = float32_classifier(cfg, task)
    exporter.check(classifier_parts(model)[0], run_dir, task.name)  # before the weights load
    model.load_weights(str(checkpoint)).assert_existing_objects_matched().expect_partial()
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
    return export_classifier(model, task, cfg.model.name_or_path, run_dir, exporter, metrics)


def main(argv: list[str]) -> None:
    """`run_dir=<run> [export.export_dir=...] [export.name=...] [export.version=...] [export.branches=...]`."""
    usage = ("usage: python -m tfbert.export run_dir=<run dir> [export.name=NAME] [export.version=N] "
             "[export.export_dir=DIR] [export.branches=N]")
    if {"-h", "--help"} & set(argv):
        print(f"{usage}\n\nExports a finished tfbert run again, from its config.yaml, task.json and best checkpoint.")
        raise SystemExit(0)
    if bare := [argument for argument in argv if "=" not in argument]:
        raise SystemExit(f"{usage}\n{bare[0]!r} is not KEY=VALUE; the run dir is given as run_dir={bare[0]}")
    try:
        arguments = OmegaConf.to_container(OmegaConf.from_dotlist(argv))
    except Exception as error:
        raise SystemExit(f"{usage}\ncannot parse {argv}: {error}") from None
    export_args = arguments.pop("export", None) or {}
    keys = list(inspect.signature(Exporter).parameters)
    unknown = sorted(arguments.keys() - {"run_dir"}) + sorted(f"export.{key}" for key in export_args.keys() - set(keys))
    if unknown or "run_dir" not in arguments:
        problem = f"unknown keys {unknown}" if unknown else "run_dir is required"
        raise SystemExit(f"{usage}\n{problem}; valid: run_dir, {', '.join('export.' + key for key in keys)}")
    if not Path(arguments["run_dir"]).is_dir():
        raise SystemExit(f"tfbert.export: run_dir {arguments['run_dir']} does not exist")
    try:
        print(export_run(arguments["run_dir"], **export_args))
    except (FileExistsError, FileNotFoundError, ValueError, InstantiationException) as error:
        if isinstance(error, InstantiationException) and error.__cause__ is not None:
            error = error.__cause__  # what the constructor said, without Hydra's wrapping
        raise SystemExit(f"tfbert.export: {error}") from None


if __name__ == "__main__":
    main(sys.argv[1:])
