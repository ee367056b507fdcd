"""Feature extraction: a frozen encoder's outputs, computed once, train the head alone.

When nothing in the backbone trains (`model.freeze=all`), every epoch would run the
same encoder on the same sentences. Instead each split is encoded once, in inference
mode, and the head trains on those outputs: a model of the head only, whose layers are
the classifier's own, so the classifier holds the trained head afterwards. The cached
outputs keep real tokens only; batches are re-formed every epoch by the run's Pipeline
(shuffled, length-bucketed, padded with zeros).

Held in memory, float32: per token last_hidden_state (hidden) and, for heads that read
them, hidden_states ((layers + 1) x hidden); per example pooler_output (hidden).
"""

import logging
import sys
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfbert.classifier import Classifier, encoder_features
from tfbert.heads import ClassificationHead
from tfbert.pipeline import Pipeline

log = logging.getLogger(__name__)


class EncodedSplit:
    """One split's encoder outputs, real tokens only, and its labels.

    Args:
        features: numpy arrays. Per token, every example's tokens end to end:
            `last_hidden_state` (tokens, hidden), `attention_mask` (tokens,) and optionally
            `hidden_states` (tokens, layers + 1, hidden); per example: `pooler_output` (n, hidden).
        lengths: (n,) tokens of each example.
        labels: (n,) or (n, classes) labels.
    """

    PER_TOKEN = ("last_hidden_state", "attention_mask", "hidden_states")

    def __init__(self, features: dict, lengths: np.ndarray, labels: np.ndarray):
        if len(lengths) != len(labels):
            raise ValueError(f"{len(lengths)} encoded examples but {len(labels)} labels")
        self.features = features
        self.lengths = lengths
        self.labels = labels
        self._tensors = {}  # features as (ragged) tensors, made once however many datasets are built

    def _tensor(self, name: str):
        if name not in self._tensors:
            values = self.features[name]
            self._tensors[name] = (
                tf.RaggedTensor.from_row_lengths(values, self.lengths) if name in self.PER_TOKEN else tf.constant(values)
            )
        return self._tensors[name]

    def __len__(self) -> int:
        return len(self.lengths)

    def select(self, names) -> "EncodedSplit":
        """The same split with only the features in `names` (sharing their tensors)."""
        split = EncodedSplit({name: self.features[name] for name in names}, self.lengths, self.labels)
        split._tensors = {name: self._tensor(name) for name in names}
        return split

    def signature(self) -> dict:
        """tf.TensorSpec per feature of a batch, without the batch axis (a head model's inputs)."""
        shapes = {
            "last_hidden_state": lambda values: (None, values.shape[-1]),
            "attention_mask": lambda values: (None,),
            "hidden_states": lambda values: (values.shape[1], None, values.shape[2]),  # (layers + 1, seq, hidden)
            "pooler_output": lambda values: values.shape[1:],
        }
        return {
            name: tf.TensorSpec(shapes[name](values), tf.as_dtype(values.dtype), name=name)
            for name, values in self.features.items()
        }

    def dataset(self, pipeline: Pipeline, training: bool = False) -> tf.data.Dataset:
        """(features, labels) batches of these outputs, batched as `pipeline` batches tokens."""
        columns = {name: self._tensor(name) for name in self.features}
        examples = tf.data.Dataset.from_tensor_slices((columns, self.labels))
        examples = examples.map(_as_heads_read, num_parallel_calls=tf.data.AUTOTUNE)
        return pipeline.batch(examples, self.lengths, training)


def _as_heads_read(features: dict, label):
    """One example's slices as dense tensors; hidden_states (seq, layers + 1, hidden) ->
    (layers + 1, seq, hidden)."""
    features = {name: tf.convert_to_tensor(value) for name, value in features.items()}
    if "hidden_states" in features:
        features["hidden_states"] = tf.transpose(features["hidden_states"], [1, 0, 2])
    return features, label


def encode_split(backbone: tf_keras.Model, batches: tf.data.Dataset, hidden_states: bool = False,
                 name: str = "split") -> EncodedSplit:
    """Run the encoder once over token `batches`; real tokens only, `hidden_states` on request."""
    encode = tf.function(  # one trace for every batch shape
        lambda tokens: encoder_features(backbone, tokens, hidden_states=hidden_states),
        input_signature=[batches.element_spec[0]],
    )
    steps = int(batches.cardinality()) if batches.cardinality() >= 0 else None
    progress = tf_keras.utils.Progbar(steps, unit_name="batch", verbose=1 if sys.stdout.isatty() else 2)
    started = time.perf_counter()
    parts = {name: [] for name in ("last_hidden_state", "attention_mask", "pooler_output", "lengths", "labels")}
    if hidden_states:
        parts["hidden_states"] = []
    for step, (tokens, label) in enumerate(batches, 1):
        outputs = {key: value.numpy() for key, value in encode(tokens).items()}
        real = outputs["attention_mask"].astype(bool)  # (batch, seq): each row's real tokens come first
        parts["last_hidden_state"].append(outputs["last_hidden_state"][real].astype(np.float32))
        parts["attention_mask"].append(outputs["attention_mask"][real])
        parts["pooler_output"].append(outputs["pooler_output"].astype(np.float32))
        parts["lengths"].append(real.sum(axis=1))
        parts["labels"].append(label.numpy())
        if hidden_states:  # (batch, layers + 1, seq, hidden) -> (tokens, layers + 1, hidden)
            parts["hidden_states"].append(outputs["hidden_states"].transpose(0, 2, 1, 3)[real].astype(np.float32))
        progress.update(step)
    log.info("feature extraction: encoded %d %s examples once in %.1f s (the encoder is frozen)",
             sum(map(len, parts["lengths"])), name, time.perf_counter() - started)
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    return EncodedSplit(arrays, arrays.pop("lengths"), arrays.pop("labels"))


def build_head_model(head: ClassificationHead, signature: dict) -> tf_keras.Model:
    """A Classifier of `head` alone: encoder outputs (batched `signature`) -> logits."""
    inputs = {
        name: tf_keras.Input(shape=spec.shape, dtype=spec.dtype, name=name) for name, spec in signature.items()
    }
    return Classifier(inputs, head(inputs), name=f"{head.name}_on_features")


def feature_extraction(
    backbone: tf_keras.Model,
    head: ClassificationHead,
    pipeline: Pipeline,
    train_batches: tf.data.Dataset,
    validation_batches: tf.data.Dataset,
) -> tuple[tf_keras.Model, tf.data.Dataset, tf.data.Dataset]:
    """Encode both splits once; returns the head model and its train and validation batches.

    `train_batches` and `validation_batches` are token batches (any order); the
    returned train batches are reshuffled every epoch by `pipeline`.
    """
    hidden_states = "hidden_states" in head.reads
    train = encode_split(backbone, train_batches, hidden_states, "train")
    validation = encode_split(backbone, validation_batches, hidden_states, "validation")
    model = build_head_model(head, train.signature())
    return model, train.dataset(pipeline, training=True), validation.dataset(pipeline)
