"""Feature extraction: a frozen encoder's outputs, computed once, train the head alone.

When nothing in the backbone trains (`model.freeze=all`), every epoch would run the
same encoder on the same sentences. Instead each split is encoded once, in inference
mode, and the head trains on those outputs: a model of the head only, whose layers are
the classifier's own, so the classifier holds the trained head afterwards. The cached
outputs of an example keep only its real tokens; batches are re-formed every epoch by
the run's Pipeline (shuffled, length-bucketed, padded with zeros).

Held in memory per example, float32 (the compute dtype under mixed precision):
last_hidden_state seq x hidden, pooler_output hidden, and, for heads that read them,
hidden_states (layers + 1) x seq x hidden.
"""

import logging
import time

import numpy as np
import tensorflow as tf
import tf_keras

from tfbert.classifier import Classifier, encoder_features
from tfbert.heads import ClassificationHead
from tfbert.pipeline import Pipeline

log = logging.getLogger(__name__)


class EncodedSplit:
    """One split's encoder outputs, example by example, and its labels.

    Args:
        examples: per example, a dict of numpy arrays trimmed to its real tokens:
            `last_hidden_state` (seq, hidden), `pooler_output` (hidden,),
            `attention_mask` (seq,) and optionally `hidden_states` (layers + 1, seq, hidden).
        labels: (n,) or (n, classes) numpy labels, in the examples' order.
    """

    def __init__(self, examples: list[dict], labels: np.ndarray):
        if len(examples) != len(labels):
            raise ValueError(f"{len(examples)} encoded examples but {len(labels)} labels")
        self.examples = examples
        self.labels = labels

    def __len__(self) -> int:
        return len(self.examples)

    def signature(self) -> dict:
        """tf.TensorSpec per feature of one example (seq left unknown)."""
        first = self.examples[0]
        return {
            name: tf.TensorSpec([None if size is None else size for size in _example_shape(name, value)],
                                tf.as_dtype(value.dtype), name=name)
            for name, value in first.items()
        }

    def dataset(self, pipeline: Pipeline, training: bool = False) -> tf.data.Dataset:
        """(features, labels) batches of these outputs, batched as `pipeline` batches tokens."""
        label_spec = tf.TensorSpec(self.labels.shape[1:], tf.as_dtype(self.labels.dtype))
        examples = tf.data.Dataset.from_generator(
            lambda: zip(self.examples, self.labels), output_signature=(self.signature(), label_spec)
        )
        longest = max(len(example["attention_mask"]) for example in self.examples)
        return pipeline.batch(examples, len(self), longest, training)


def _example_shape(name: str, value: np.ndarray) -> list:
    """An example's feature shape with its token axis unknown."""
    token_axis = {"last_hidden_state": 0, "attention_mask": 0, "hidden_states": 1}.get(name)
    return [None if axis == token_axis else size for axis, size in enumerate(value.shape)]


def encode_split(backbone: tf_keras.Model, head: ClassificationHead, batches: tf.data.Dataset,
                 name: str = "split") -> EncodedSplit:
    """Run the encoder once over token `batches` and keep, per example, what `head` reads."""
    hidden_states = "hidden_states" in head.reads
    encode = tf.function(  # one trace for every batch shape
        lambda tokens: encoder_features(backbone, tokens, hidden_states=hidden_states),
        input_signature=[batches.element_spec[0]],
    )
    steps = int(batches.cardinality()) if batches.cardinality() >= 0 else None
    progress = tf_keras.utils.Progbar(steps, unit_name="batch")
    started = time.perf_counter()
    examples, labels = [], []
    for step, (tokens, label) in enumerate(batches, 1):
        features = {key: value.numpy() for key, value in encode(tokens).items()}
        for row, length in enumerate(features["attention_mask"].sum(axis=1)):
            examples.append({
                "last_hidden_state": features["last_hidden_state"][row, :length].astype(np.float32),
                "pooler_output": features["pooler_output"][row].astype(np.float32),
                "attention_mask": features["attention_mask"][row, :length],
                **({"hidden_states": features["hidden_states"][row, :, :length].astype(np.float32)}
                   if hidden_states else {}),
            })
        labels.append(label.numpy())
        progress.update(step)
    log.info("feature extraction: encoded %d %s examples once in %.1f s (the encoder is frozen)",
             len(examples), name, time.perf_counter() - started)
    return EncodedSplit(examples, np.concatenate(labels))


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
    train = encode_split(backbone, head, train_batches, "train")
    validation = encode_split(backbone, head, validation_batches, "validation")
    model = build_head_model(head, train.signature())
    return model, train.dataset(pipeline, training=True), validation.dataset(pipeline)
