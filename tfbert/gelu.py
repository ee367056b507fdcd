"""The encoder's exact GELU, computed in float32 with its gradient written out.

transformers' TFBertIntermediate applies `tf.nn.gelu` (x * Phi(x), through erfc). Its
automatic gradient runs about a dozen elementwise ops, and in bfloat16 TensorFlow's CPU
erfc kernel is slow (Erfc was 9% of a mixed_bfloat16 training step's op time in the
bench/speed.py profile). `gelu` computes the same function in float32 whatever the
input's dtype, keeps Phi(x) from the forward pass and gives the gradient
Phi(x) + x * phi(x) in one expression.
"""

import math

import tensorflow as tf

_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)


@tf.custom_gradient
def gelu(x):
    """x * Phi(x) (the erf form, not the tanh approximation); the result has x's dtype."""
    x32 = tf.cast(x, tf.float32)
    cdf = 0.5 + 0.5 * tf.math.erf(x32 * _INV_SQRT2)

    def gradient(upstream):
        pdf = _INV_SQRT_2PI * tf.exp(-0.5 * tf.square(x32))
        return tf.cast(tf.cast(upstream, tf.float32) * (cdf + x32 * pdf), x.dtype)

    return tf.cast(x32 * cdf, x.dtype), gradient


def use_float32_gelu(backbone) -> None:
    """Give every encoder layer of a TFBertModel whose config says `gelu` this `gelu`."""
    if backbone.config.hidden_act != "gelu":
        return
    for layer in backbone.bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = gelu
