"""The encoder's layer norms with their gradient written out.

BERT normalizes with epsilon 1e-12, below the 1.001e-5 that fused_batch_norm accepts, so
tf_keras' LayerNormalization runs unfused: tf.nn.moments and tf.nn.batch_normalization
forward, and their automatic gradient backward, a few dozen elementwise ops and
reductions on (tokens, hidden) tensors; a MiniLM training step runs 13 of them.
`layer_norm` computes the same normalization in float32 whatever the input's dtype (as
Keras does for 16-bit inputs), keeps the normalized input and the inverse standard
deviation from the forward pass, and gives the gradients in closed form:

    dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)),  g = dy * gamma
    dgamma = sum(dy * x_hat),  dbeta = sum(dy)   (sums over every position)

`python bench/ops.py` times both (bench/results/ops.md).
"""

import tensorflow as tf
import tf_keras


def layer_norm(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, epsilon: float) -> tf.Tensor:
    """(x - mean) / sqrt(variance + epsilon) * gamma + beta over x's last axis; x's dtype.

    `gamma` and `beta` are float32, of shape (x's last dimension,).
    """

    @tf.custom_gradient
    def normalize(x, gamma, beta):
        x32 = tf.cast(x, tf.float32)
        centered = x32 - tf.reduce_mean(x32, axis=-1, keepdims=True)
        inv_std = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
        x_hat = centered * inv_std

        def gradient(upstream):
            dy = tf.cast(upstream, tf.float32)
            g = dy * gamma
            dx = inv_std * (
                g - tf.reduce_mean(g, axis=-1, keepdims=True)
                - x_hat * tf.reduce_mean(g * x_hat, axis=-1, keepdims=True)
            )
            positions = list(range(dy.shape.rank - 1))
            return tf.cast(dx, x.dtype), tf.reduce_sum(dy * x_hat, axis=positions), tf.reduce_sum(dy, axis=positions)

        return tf.cast(x_hat * gamma + beta, x.dtype), gradient

    return normalize(x, gamma, beta)


@tf_keras.saving.register_keras_serializable(package="tfbert")
class LayerNormalization(tf_keras.layers.LayerNormalization):
    """tf_keras.layers.LayerNormalization through `layer_norm` when it normalizes the last
    axis with a scale and an offset (Keras' own computation otherwise)."""

    def call(self, inputs):
        if self.axis != [inputs.shape.rank - 1] or not (self.center and self.scale):
            return super().call(inputs)
        return layer_norm(inputs, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta), self.epsilon)


def use_fast_layer_norm(backbone: tf_keras.layers.Layer) -> int:
    """Make every tf_keras LayerNormalization inside `backbone` this module's; returns how many.

    Each layer keeps its weights, names and settings (only its class changes, which
    overrides `call` alone), so checkpoints and exports are unchanged.
    """
    swapped = 0
    for module in backbone.submodules:
        if type(module) is tf_keras.layers.LayerNormalization:
            module.__class__ = LayerNormalization
            swapped += 1
    return swapped
