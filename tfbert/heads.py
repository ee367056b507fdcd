"""Classification heads: how a BERT encoder's outputs become class logits.

A head reads a dict of encoder outputs:
    last_hidden_state  (batch, seq, hidden)
    pooler_output      (batch, hidden): [CLS] through the pretrained dense + tanh
    attention_mask     (batch, seq): 1 for real tokens, 0 for padding
    hidden_states      (batch, layers + 1, seq, hidden): the embeddings, then every
                       encoder layer's output; only for heads whose `reads` name it
pools it to one vector per example (`pool`), then applies dropout, an optional MLP
(`hidden_units`, each layer followed by dropout) and the output layer. Each head is a
registered tf_keras layer: it round-trips through get_config/from_config, and a Keras
model of heads saves and loads whole. (A classifier, whose transformers backbone Keras
cannot rebuild that way, is kept as checkpoints and exported as a SavedModel.)
"""

import tensorflow as tf
import tf_keras

from tfbert.checks import is_number, is_whole_number

PACKAGE = "tfbert"


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ClassificationHead(tf_keras.layers.Layer):
    """Base head: pooled features -> dropout -> [dense -> activation -> dropout]* -> dense logits.

    Args:
        num_outputs: number of logits (classes).
        dropout: dropout rate on the pooled features and after each hidden layer, in training.
        initializer_range: stddev of the truncated-normal dense-layer inits (BERT's 0.02).
        hidden_units: widths of the MLP between the pooled vector and the output layer;
            empty (the default): the output layer reads the pooled vector directly.
        activation: the MLP layers' activation, a tf_keras activation name.
    """

    # The encoder outputs `pool` reads besides attention_mask. The classifier leaves the
    # pretrained pooler untrained when a head does not read pooler_output, and asks the
    # encoder for hidden_states only when a head reads them.
    reads = ("last_hidden_state",)
    # True where `pool` reads position 0 ([CLS]) of last_hidden_state only (pooler_output
    # reads it too): serving then runs the top encoder layer for [CLS] alone (tfbert.packed).
    reads_cls_only = False

    def __init__(
        self,
        num_outputs: int,
        dropout: float = 0.1,
        initializer_range: float = 0.02,
        hidden_units: list[int] = (),
        activation: str = "gelu",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not is_number(dropout) or not 0 <= dropout < 1:
            raise ValueError(f"dropout must be a rate in [0, 1), got {dropout!r}")
        if not is_number(initializer_range) or initializer_range <= 0:
            raise ValueError(f"initializer_range must be a number above 0 (BERT's 0.02), got {initializer_range!r}")
        if isinstance(hidden_units, (str, int)) or not all(is_whole_number(units, 1) for units in hidden_units):
            raise ValueError(f"hidden_units must be a list of positive layer widths such as [256], got {hidden_units!r}")
        hidden_units = list(hidden_units)  # also turns a Hydra ListConfig into a list
        try:
            tf_keras.activations.get(activation)
        except ValueError:
            raise ValueError(
                f"activation must be a tf_keras activation name such as gelu, relu or tanh, got {activation!r}"
            ) from None
        self.num_outputs = num_outputs
        self.dropout = dropout
        self.initializer_range = initializer_range
        self.hidden_units = hidden_units
        self.activation = activation
        self.dropout_layer = tf_keras.layers.Dropout(dropout)
        self.hidden_layers = [
            tf_keras.layers.Dense(
                units,
                activation=activation,
                kernel_initializer=tf_keras.initializers.TruncatedNormal(stddev=initializer_range),
                name=f"hidden_{index}",
            )
            for index, units in enumerate(hidden_units)
        ]
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
        pooled = self.dropout_layer(self.pool(features), training=training)  # (batch, features)
        for hidden_layer in self.hidden_layers:
            pooled = self.dropout_layer(hidden_layer(pooled), training=training)  # (batch, units)
        return self.output_layer(pooled)  # (batch, num_outputs)

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "dropout": self.dropout,
            "initializer_range": self.initializer_range,
            "hidden_units": self.hidden_units,
            "activation": self.activation,
        }


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class PoolerHead(ClassificationHead):
    """BERT's pooler_output: the [CLS] vector through the pretrained dense + tanh."""

    reads = ("pooler_output",)
    reads_cls_only = True

    def pool(self, features):
        return features["pooler_output"]


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ClsHead(ClassificationHead):
    """The raw [CLS] vector: last_hidden_state[:, 0]."""

    reads_cls_only = True

    def pool(self, features):
        return features["last_hidden_state"][:, 0]


def _token_mask(features: dict) -> tf.Tensor:
    """(batch, seq, 1) mask of real tokens, in the hidden states' dtype."""
    hidden = features["last_hidden_state"]
    return tf.cast(features["attention_mask"], hidden.dtype)[:, :, tf.newaxis]


def _masked_mean(hidden: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """Mean of (batch, seq, hidden) over the tokens where the (batch, seq, 1) mask is 1."""
    total = tf.reduce_sum(hidden * mask, axis=1)  # (batch, hidden)
    count = tf.maximum(tf.reduce_sum(mask, axis=1), 1.0)  # (batch, 1)
    return total / count


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class MeanPoolingHead(ClassificationHead):
    """Mean of last_hidden_state over real tokens; padding does not count."""

    def pool(self, features):
        return _masked_mean(features["last_hidden_state"], _token_mask(features))


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class MaxPoolingHead(ClassificationHead):
    """Elementwise max of last_hidden_state over real tokens; padding never wins."""

    def pool(self, features):
        hidden = features["last_hidden_state"]
        mask = _token_mask(features)
        lowest = tf.constant(hidden.dtype.min, hidden.dtype)
        pooled = tf.reduce_max(tf.where(mask > 0, hidden, lowest), axis=1)  # (batch, hidden)
        # A row without real tokens (a hand-made mask) pools to zeros, as the mean does, not to dtype.min.
        return tf.where(tf.reduce_max(mask, axis=1) > 0, pooled, tf.zeros_like(pooled))


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ClsMeanHead(ClassificationHead):
    """The [CLS] vector and the mean over real tokens side by side: (batch, 2 * hidden)."""

    def pool(self, features):
        hidden = features["last_hidden_state"]
        return tf.concat([hidden[:, 0], _masked_mean(hidden, _token_mask(features))], axis=-1)


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class LastLayersClsHead(ClassificationHead):
    """The [CLS] vectors of the top `num_layers` encoder layers, concatenated (top layer first).

    BERT's paper found the last four layers' concatenation the best fixed features.

    Args:
        num_layers: how many of the top encoder layers to read; at most the encoder's depth.
        (others as ClassificationHead)
    """

    reads = ("hidden_states",)

    def __init__(self, num_outputs: int, num_layers: int = 4, **kwargs):
        super().__init__(num_outputs, **kwargs)
        if not is_whole_number(num_layers, 1):
            raise ValueError(f"num_layers must be a whole number above 0, got {num_layers!r}")
        self.num_layers = num_layers

    def build(self, input_shape):
        encoder_layers = input_shape["hidden_states"][1] - 1  # hidden_states holds the embeddings too
        if self.num_layers > encoder_layers:
            raise ValueError(
                f"num_layers={self.num_layers}: {self.name} reads the [CLS] vectors of the top {self.num_layers} "
                f"layers, but the encoder has {encoder_layers}; use num_layers between 1 and {encoder_layers}"
            )
        super().build(input_shape)

    def pool(self, features):
        states = features["hidden_states"]  # (batch, layers + 1, seq, hidden)
        top_cls = states[:, -1 : -self.num_layers - 1 : -1, 0]  # (batch, num_layers, hidden)
        return tf.reshape(top_cls, [-1, self.num_layers * states.shape[-1]])  # (batch, num_layers * hidden)

    def get_config(self):
        return {**super().get_config(), "num_layers": self.num_layers}


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class ScalarMixHead(ClassificationHead):
    """A learned softmax-weighted sum of all hidden_states (ELMo's scalar mix), mean-pooled.

    The weights start equal, so training starts from the average of the embeddings and
    every layer; the mix is then averaged over real tokens.
    """

    reads = ("hidden_states",)

    def build(self, input_shape):
        self.layer_weights = self.add_weight(
            name="layer_weights",
            shape=(input_shape["hidden_states"][1],),  # (layers + 1,)
            initializer="zeros",
        )
        super().build(input_shape)

    def pool(self, features):
        states = features["hidden_states"]  # (batch, layers + 1, seq, hidden)
        weights = tf.cast(tf.nn.softmax(self.layer_weights), states.dtype)  # (layers + 1,)
        mixed = tf.einsum("blsh,l->bsh", states, weights)  # (batch, seq, hidden)
        return _masked_mean(mixed, _token_mask(features))


@tf_keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionPoolingHead(ClassificationHead):
    """A weighted mean of last_hidden_state whose weights a learned query scores per token.

    score = token . query / sqrt(hidden); the weights are the scores' softmax over real
    tokens (padding gets weight 0). The query starts at zero, i.e. at the plain mean.
    """

    def build(self, input_shape):
        self.query = self.add_weight(
            name="query", shape=(input_shape["last_hidden_state"][-1],), initializer="zeros"
        )
        super().build(input_shape)

    def pool(self, features):
        hidden = features["last_hidden_state"]  # (batch, seq, hidden)
        scores = tf.einsum("bsh,h->bs", tf.cast(hidden, tf.float32), tf.cast(self.query, tf.float32))
        scores /= tf.sqrt(float(hidden.shape[-1]))
        real = tf.cast(features["attention_mask"], tf.bool)  # (batch, seq)
        scores = tf.where(real, scores, tf.float32.min)
        # Zero on padding: a row without real tokens (a hand-made mask) pools to zeros, as the
        # mean does, not to the mean of its padding.
        weights = tf.nn.softmax(scores, axis=-1) * tf.cast(real, tf.float32)
        weights = tf.cast(weights, hidden.dtype)  # (batch, seq)
        return tf.einsum("bsh,bs->bh", hidden, weights)  # (batch, hidden)
