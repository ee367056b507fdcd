"""The classifier: token ids -> backbone -> head -> logits, as one tf_keras model."""

import tensorflow as tf
import tf_keras

from tfbert.heads import ClassificationHead

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def encoder_features(backbone: tf_keras.Model, tokens: dict, hidden_states: bool = False) -> dict:
    """The encoder outputs a head reads, for int32 (batch, seq) `tokens` (see tfbert.heads).

    `hidden_states` asks the encoder for every layer's output too, stacked to
    (batch, layers + 1, seq, hidden); heads that do not read them do not pay for them.
    """
    encoded = backbone(**tokens, output_hidden_states=hidden_states)
    features = {
        "last_hidden_state": encoded.last_hidden_state,  # (batch, seq, hidden)
        "pooler_output": encoded.pooler_output,  # (batch, hidden)
        "attention_mask": tokens["attention_mask"],  # (batch, seq)
    }
    if hidden_states:
        # layers + 1 tensors of (batch, seq, hidden): the embeddings, then each layer.
        features["hidden_states"] = tf.stack(encoded.hidden_states, axis=1)  # (batch, layers + 1, seq, hidden)
    return features


def build_classifier(backbone: tf_keras.Model, head: ClassificationHead) -> tf_keras.Model:
    """A functional model: dict of int32 (batch, seq) token tensors -> (batch, classes) logits."""
    inputs = {
        name: tf_keras.Input(shape=(None,), dtype=tf.int32, name=name) for name in INPUT_NAMES
    }
    # A head that never reads pooler_output would leave the pooler without gradients.
    backbone.bert.pooler.trainable = "pooler_output" in head.reads
    features = encoder_features(backbone, inputs, hidden_states="hidden_states" in head.reads)
    logits = head(features)
    return tf_keras.Model(inputs, logits, name=f"bert_{head.name}")
