"""Classification heads: how a BERT encoder's outputs become class logits.

A head reads a dict of encoder outputs:
    last_hidden_state  (batch, seq, hidden)
    pooler_output      (batch, hidden): [CLS] through the pretrained dense + tanh
    attention_mask     (batch, seq): 1 for real tokens, 0 for padding
pools it to one vector per example (`pool`), then applies dropout and the output
layer. Each head is a registered tf_keras layer, so a model holding it saves,
loads and round-trips through get_config/from_config.
"""

import tensorflow as tf
import tf_keras

PACKAGE = "tfbert"


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ClassificationHead(tf_keras.layers.Layer):
    """Base head: pooled features -> dropout -> dense logits.

    Args:
        num_outputs: number of logits (classes).
        dropout: dropout rate on the pooled features during training.
        initializer_range: stddev of the truncated-normal output-layer init (BERT's 0.02).
    """

    # The encoder outputs `pool` reads besides attention_mask; the classifier leaves the
    # pretrained pooler untrained when a head does not read pooler_output.
    reads = ("last_hidden_state",)

    def __init__(self, num_outputs: int, dropout: float = 0.1, initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        self.num_outputs = num_outputs
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.dropout_layer = tf_keras.layers.Dropout(dropout)
        # Logits stay float32 under mixed precision.
        self.output_layer = tf_keras.layers.Dense(
            num_outputs,
            kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=initializer_range),
            dtype="float32",
            name="logits",
        )

    def pool(self, features: dict) -> tf.Tensor:
        """One feature vector per example: (batch, features)."""
        raise NotImplementedError

    def call(self, features: dict, training=None) -> tf.Tensor:
        pooled = self.dropout_layer(self.pool(features), training=training)
        return self.output_layer(pooled)  # (batch, num_outputs)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "dropout": self.dropout,
            "initializer_range": self.initializer_range,
        }


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class PoolerHead(ClassificationHead):
    """BERT's pooler_output: the [CLS] vector through the pretrained dense + tanh."""

    reads = ("pooler_output",)

    def pool(self, features):
        return features["pooler_output"]


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ClsHead(ClassificationHead):
    """The raw [CLS] vector: last_hidden_state[:, 0]."""

    def pool(self, features):
        return features["last_hidden_state"][:, 0]


def _token_mask(features: dict) -> tf.Tensor:
    """(batch, seq, 1) mask of real tokens, in the hidden states' dtype."""
    hidden = features["last_hidden_state"]
    return tf.cast(features["attention_mask"], hidden.dtype)[:, :, tf.newaxis]


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class MeanPoolingHead(ClassificationHead):
    """Mean of last_hidden_state over real tokens; padding does not count."""

    def pool(self, features):
        mask = _token_mask(features)
        total = tf.reduce_sum(features["last_hidden_state"] * mask, axis=1)  # (batch, hidden)
        count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)  # (batch, 1)
        return total / count


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class MaxPoolingHead(ClassificationHead):
    """Elementwise max of last_hidden_state over real tokens; padding never wins."""

    def pool(self, features):
        hidden = features["last_hidden_state"]
        mask = _token_mask(features)
        lowest = tf.constant(hidden.dtype.min, hidden.dtype)
        return tf.reduce_max(tf.where(mask > 0, hidden, lowest), axis=1)  # (batch, hidden)
