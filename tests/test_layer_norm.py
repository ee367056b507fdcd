import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import MINILM, TINY_CONFIG
from tfbert.backbone import load_backbone
from tfbert.layer_norm import LayerNormalization, layer_norm, use_fast_layer_norm
from tfbert.optimization import NO_WEIGHT_DECAY


def output_and_gradients(layer, x, upstream):
    """The layer's output and the gradients of its input, scale and offset."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
    return [y, *tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=upstream)]


def layer_pair(shape, axis=-1, dtype="float32"):
    """Keras' LayerNormalization and tfbert's with BERT's epsilon and the same random weights."""
    keras_layer = tf_keras.layers.LayerNormalization(axis=axis, epsilon=1e-12, dtype=dtype)
    tfbert_layer = LayerNormalization(axis=axis, epsilon=1e-12, dtype=dtype)
    for layer in (keras_layer, tfbert_layer):
        layer.build(shape)
    weights = [tf.random.stateless_normal(w.shape, seed=[index, 7]) for index, w in enumerate(keras_layer.weights)]
    keras_layer.set_weights(weights)
    tfbert_layer.set_weights(weights)
    return keras_layer, tfbert_layer


@pytest.mark.parametrize("axis", [-1, 1])  # axis 1: not the last, so Keras' own computation
def test_float32_values_and_gradients_are_keras_layer_normalization(axis):
    x = tf.random.stateless_normal((4, 7, 64), seed=[1, 2]) * 3 + 2
    upstream = tf.random.stateless_normal(x.shape, seed=[3, 4])
    keras_layer, tfbert_layer = layer_pair(x.shape, axis)
    for ours, theirs in zip(output_and_gradients(tfbert_layer, x, upstream), output_and_gradients(keras_layer, x, upstream)):
        assert ours.shape == theirs.shape and ours.dtype == tf.float32
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_half_precision_is_the_float32_computation_rounded_once(policy):
    x32 = tf.random.stateless_normal((3, 5, 32), seed=[5, 6]) * 3
    half = tf_keras.mixed_precision.Policy(policy).compute_dtype
    x = tf.cast(x32, half)  # the float32 reference reads the same rounded inputs
    upstream = tf.cast(tf.random.stateless_normal(x.shape, seed=[7, 8]), half)
    _, layer = layer_pair(x.shape, dtype=policy)
    y, dx, dgamma, dbeta = output_and_gradients(layer, x, upstream)
    assert (y.dtype, dx.dtype, dgamma.dtype, dbeta.dtype) == (half, half, tf.float32, tf.float32)

    x_f32, upstream_f32 = tf.cast(x, tf.float32), tf.cast(upstream, tf.float32)
    gamma, beta = tf.convert_to_tensor(layer.gamma), tf.convert_to_tensor(layer.beta)
    with tf.GradientTape() as tape:
        tape.watch([x_f32, gamma, beta])
        y_ref = layer_norm(x_f32, gamma, beta, 1e-12)
    dx_ref, dgamma_ref, dbeta_ref = tape.gradient(y_ref, [x_f32, gamma, beta], output_gradients=upstream_f32)
    np.testing.assert_array_equal(y.numpy(), tf.cast(y_ref, half).numpy())
    np.testing.assert_array_equal(dx.numpy(), tf.cast(dx_ref, half).numpy())
    np.testing.assert_allclose(dgamma.numpy(), dgamma_ref.numpy(), rtol=1e-6)
    np.testing.assert_allclose(dbeta.numpy(), dbeta_ref.numpy(), rtol=1e-6)


def test_backbones_use_it_with_their_weights_and_names_kept():
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
    norms = [module for module in backbone.submodules if isinstance(module, tf_keras.layers.LayerNormalization)]
    # The embeddings' and two per encoder layer.
    assert len(norms) == 1 + 2 * TINY_CONFIG["num_hidden_layers"]
    assert all(type(norm) is LayerNormalization and norm.epsilon == 1e-12 for norm in norms)
    # The variables are the same objects under the same names: weight decay still skips them.
    names = [variable.name for norm in norms for variable in norm.weights]
    assert names and all("LayerNorm" in name for name in names) and "LayerNorm" in NO_WEIGHT_DECAY
    assert use_fast_layer_norm(backbone) == 0  # nothing left to swap


def test_the_layer_serializes_as_tfbert_s():
    layer = LayerNormalization(epsilon=1e-12)
    restored = tf_keras.layers.deserialize(tf_keras.layers.serialize(layer))
    assert type(restored) is LayerNormalization and restored.epsilon == 1e-12
