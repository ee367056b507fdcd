"""Dropout whose keep/drop decisions come from 16 random bits per element.

tf_keras' Dropout draws a float32 uniform number for every element, compares it with
the rate and selects between the scaled input and zeros, forward and backward; a MiniLM
training step runs it 19 times. `dropout` draws half as many random words (each 32-bit
word gives two elements their 16 bits), turns them into one mask of 0 and
1 / (1 - rate), and multiplies by it; the gradient is the same product.
`python bench/ops.py` times both (bench/results/ops.md).

An element is dropped when its 16 bits are below round(rate * 65536), so the rate is
exact to 1/65536 (0.1 becomes 0.100006).
"""

import numbers

import tensorflow as tf
import tf_keras

LEVELS = 2**16  # the values of 16 random bits


def dropout(x: tf.Tensor, rate: float, seed: int | None = None) -> tf.Tensor:
    """x with each element zeroed with probability `rate`, the others scaled by 1 / (1 - rate).

    The random stream is TensorFlow's stateful one (a key drawn per call, seeded like any
    random op: `tf_keras.utils.set_random_seed` makes runs repeat), then stateless Philox.
    """
    size = tf.size(x)
    key = tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32, seed=seed)
    words = tf.random.stateless_uniform(
        [(size + 1) // 2], key, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    draws = tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size]
    keep = tf.reshape(draws >= round(rate * LEVELS), tf.shape(x))
    scale = tf.where(keep, tf.constant(1 / (1 - rate), x.dtype), tf.constant(0, x.dtype))
    return x * scale


@tf_keras.saving.register_keras_serializable(package="tfbert")
class Dropout(tf_keras.layers.Dropout):
    """tf_keras.layers.Dropout through tfbert.dropout.dropout (Keras' own with a noise_shape)."""

    def call(self, inputs, training=None):
        if self.noise_shape is not None or not isinstance(self.rate, numbers.Real):
            return super().call(inputs, training=training)
        if self.rate == 0:
            return tf.identity(inputs)
        if training is None:
            training = tf_keras.backend.learning_phase()
        return tf.__internal__.smart_cond.smart_cond(
            training, lambda: dropout(inputs, self.rate, self.seed), lambda: tf.identity(inputs)
        )


def use_fast_dropout(backbone: tf_keras.layers.Layer) -> int:
    """Swap every tf_keras Dropout inside `backbone` for tfbert's (same rate); returns how many.

    Dropout holds no weights, so checkpoints and exports are unchanged.
    """
    swapped = 0
    for module in [backbone, *backbone.submodules]:
        for name, value in list(vars(module).items()):
            if type(value) is tf_keras.layers.Dropout:
                setattr(module, name, Dropout(value.rate, noise_shape=value.noise_shape, seed=value.seed, name=value.name))
                swapped += 1
    return swapped
