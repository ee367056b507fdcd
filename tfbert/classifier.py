"""The classifier: token ids -> backbone -> head -> logits, as one tf_keras model."""

import tensorflow as tf
import tf_keras

from tfbert.heads import ClassificationHead

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def build_classifier(backbone: tf_keras.Model, head: ClassificationHead) -> tf_keras.Model:
    """A functional model: dict of int32 (batch, seq) token tensors -> (batch, classes) logits."""
    inputs = {
        name: tf_keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in INPUT_NAMES
    }
    # A head that never reads pooler_output would leave the pooler without gradients.
    backbone.bert.pooler.trainable = "pooler_output" in head.reads
    encoded = backbone(**inputs)
    features = {
        "last_hidden_state": encoded.last_hidden_state,  # (batch, seq, hidden)
        "pooler_output": encoded.pooler_output,  # (batch, hidden)
        "attention_mask": inputs["attention_mask"],  # (batch, seq)
    }
    logits = head(features)
    return tf_keras.Model(inputs, logits, name=f"bert_{head.name}")
