"""The model card written beside every export: what the model is and how to call it."""

import json
from dataclasses import dataclass

import tensorflow as tf
import tf_keras

from tfbert.heads import ClassificationHead
from tfbert.predict import json_value
from tfbert.tasks import TaskData, TaskSpec

EXAMPLE_TEXTS = ("A gripping, beautifully acted film.", "Dull, and far too long.")
EXAMPLE_PAIRS = ("It is a film about grief.", "It is a comedy.")


@dataclass(frozen=True)
class ModelCard:
    """Facts about an exported classifier; `render` adds its signatures and REST examples.

    Args:
        task: task name.
        problem_type: `single_label`, `multi_label` or `regression`.
        label_names: class names in label-id order (for regression, the target's name).
        backbone: the backbone's name or path and its size.
        head: the head's class and settings.
        max_length: longest token sequence; longer inputs are truncated.
        metrics: test-split metrics of the run, if known.
        branches: parallel branches of each served encoder layer (tfbert.packed).
    """

    task: str
    problem_type: str
    label_names: tuple[str, ...]
    backbone: str
    head: str
    max_length: int
    metrics: dict | None = None
    branches: int = 2

    @classmethod
    def describe(
        cls, model: tf_keras.Model, task: TaskData | TaskSpec, backbone_name: str, metrics: dict | None = None, branches: int = 2
    ):
        """The card of `model`, a classifier built by tfbert.classifier.build_classifier."""
        (head,) = [layer for layer in model.layers if isinstance(layer, ClassificationHead)]
        (config,) = [layer.config for layer in model.layers if hasattr(layer, "config")]
        hidden = f", hidden layers {list(head.hidden_units)} with {head.activation}" if head.hidden_units else ""
        return cls(
            task=task.name,
            problem_type=task.problem_type,
            label_names=tuple(task.label_names),
            backbone=(
                f"{backbone_name} ({config.model_type}, {config.num_hidden_layers} layers, "
                f"hidden size {config.hidden_size}, vocabulary {config.vocab_size})"
            ),
            head=f"{type(head).__name__} (dropout {head.dropout}{hidden})",
            max_length=task.max_length,
            metrics=(metrics or {}).get("test"),
            branches=branches,
        )

    def render(self, saved_model, model_name: str) -> str:
        """Markdown for the loaded SavedModel `saved_model`, served as `model_name`."""
        serving = saved_model.signatures["serving_default"]
        text_columns = sorted(serving.structured_input_signature[1])
        if text_columns == ["text"]:
            instances = list(EXAMPLE_TEXTS)
        else:
            instances = [{"text": text, "text_pair": pair} for text, pair in zip(EXAMPLE_TEXTS, EXAMPLE_PAIRS)]
        outputs = serving(**{name: tf.constant(list(EXAMPLE_TEXTS if name == "text" else EXAMPLE_PAIRS)) for name in text_columns})
        predictions = [
            {name: json_value(value[row].numpy()) for name, value in outputs.items()} for row in range(len(instances))
        ]
        scores = {name: value for name, value in (self.metrics or {}).items() if isinstance(value, float)}
        metrics = ", ".join(f"{name} {value:.4f}" for name, value in scores.items()) or "not measured"
        if scores and "examples" in self.metrics:
            metrics += f" ({self.metrics['examples']} test examples)"
        labels = ", ".join(f"{index} = {name}" for index, name in enumerate(self.label_names))
        branches = (
            f"Each encoder layer runs as {self.branches} parallel branches of the graph (its attention heads and\n"
            "feed-forward units cut in runs), which TensorFlow runs side by side on its inter-op threads."
            if self.branches > 1 else "The encoder runs as one chain of ops (exported with branches 1)."
        )
        # The snippet reads what this export outputs: label and probabilities (and multi-label's
        # predicted), or a regression value.
        answer = ", ".join(f'outputs["{name}"]' for name in ("label", "probabilities", "predicted", "value") if name in outputs)
        predict = (
            '`python -m tfbert.predict <this directory> "some text"`' if text_columns == ["text"]
            else "`python -m tfbert.predict <this directory> --input pairs.csv` (columns `text` and `text_pair`)"
        )
        signatures = "\n".join(
            f"- `{key}`: {_describe(function.structured_input_signature[1])} -> "
            f"{_describe(function.structured_outputs)}"
            for key, function in sorted(saved_model.signatures.items())
        )
        kind = "regression" if self.problem_type == "regression" else "text classifier"
        return f"""# {model_name}: {self.task} {kind}

| | |
|---|---|
| task | {self.task} ({self.problem_type}) |
| labels | {labels} |
| backbone | {self.backbone} |
| head | {self.head} |
| max length | {self.max_length} tokens, [CLS] and [SEP] included; longer texts are truncated |
| test metrics | {metrics} |

## Signatures

{signatures}

`serving_default` tokenizes raw UTF-8 strings in the graph with the backbone's own
vocabulary and casing, pads each batch to its longest text only, and cuts texts to
{self.max_length} tokens. Empty or whitespace-only texts are classified from [CLS] [SEP]
alone; bytes that are not UTF-8 are dropped.

## Serving on CPU

{branches} Serve with one thread per op and as many ops at once
as cores, and with TensorFlow's oneDNN kernels:
`TF_ENABLE_ONEDNN_OPTS=1 tensorflow_model_server --tensorflow_intra_op_parallelism=1
--tensorflow_inter_op_parallelism=<cores> ...` (tfbert.predict does the same).

## TensorFlow Serving REST API

`POST /v1/models/{model_name}:predict` (this directory is one version under
`--model_base_path=<export_dir>/{model_name}`; the server needs the TensorFlow Text ops).

Request:

```json
{json.dumps({"instances": instances}, indent=2, ensure_ascii=False)}
```

Response (computed by this export):

```json
{json.dumps({"predictions": predictions}, indent=2, ensure_ascii=False)}
```

## Python, without tfbert

```python
import tensorflow as tf
import tensorflow_text  # noqa: F401  registers the tokenizer ops

model = tf.saved_model.load("<this directory>")
outputs = model.signatures["serving_default"]({", ".join(f'{name}=tf.constant([...])' for name in text_columns)})
{answer}
```

or {predict}.
"""


def _describe(specs: dict) -> str:
    """`name` dtype (shape), ... with unknown sizes (batch, seq) shown as `?`."""
    return ", ".join(
        f"`{name}` {spec.dtype.name} {tuple(spec.shape.as_list())}".replace("None", "?")
        for name, spec in sorted(specs.items())
    )
