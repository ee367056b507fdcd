import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import MINILM, TINY_CONFIG
from tfbert.backbone import load_backbone
from tfbert.dropout import LEVELS, Dropout, dropout, use_fast_dropout


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drops_at_the_rate_and_scales_the_rest(rate):
    x = tf.ones([1000, 1001])  # an odd size: the last random word is half used
    y = dropout(x, rate).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / (1 - rate))}
    dropped = float((y == 0).mean())
    exact = round(rate * LEVELS) / LEVELS
    sigma = (exact * (1 - exact) / y.size) ** 0.5
    assert abs(dropped - exact) < 5 * sigma


def test_gradient_is_the_same_mask():
    x = tf.random.stateless_normal([64, 9, 48], seed=[1, 2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = dropout(x, 0.3)
    gradient = tape.gradient(y, x).numpy()
    np.testing.assert_allclose(gradient * x.numpy(), y.numpy(), rtol=1e-6)
    assert set(np.unique(gradient)) == {0.0, np.float32(1 / 0.7)}


def test_masks_differ_per_call_and_repeat_with_the_seed():
    x = tf.ones([50, 50])
    tf_keras.utils.set_random_seed(7)
    first, second = dropout(x, 0.5).numpy(), dropout(x, 0.5).numpy()
    tf_keras.utils.set_random_seed(7)
    again = dropout(x, 0.5).numpy()
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_keeps_the_dtype(dtype):
    y = dropout(tf.ones([64, 64], dtype), 0.25)
    assert y.dtype == dtype
    values = tf.cast(y, tf.float32).numpy()
    assert set(np.unique(values)) == {0.0, float(tf.cast(1 / 0.75, dtype))}
    assert (values == 0).mean() == pytest.approx(0.25, abs=0.03)  # 4,096 draws: 0.03 is 4.4 standard deviations


def test_layer_is_identity_when_not_training_or_rate_zero():
    x = tf.random.stateless_normal([4, 5, 6], seed=[3, 4])
    np.testing.assert_array_equal(Dropout(0.4)(x, training=False).numpy(), x.numpy())
    np.testing.assert_array_equal(Dropout(0.0)(x, training=True).numpy(), x.numpy())
    assert (Dropout(0.4)(x, training=True).numpy() == 0).any()


def test_layer_with_noise_shape_is_keras_dropout():
    x = tf.ones([6, 10, 8])
    y = Dropout(0.5, noise_shape=(6, 1, 8))(x, training=True).numpy()
    # Keras' noise_shape semantics: one decision per (example, channel), shared along axis 1.
    assert (y == y[:, :1, :]).all() and (y == 0).any()


def test_backbone_gets_it_in_every_dropout_and_inference_is_unchanged():
    rates = {**TINY_CONFIG, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.2}
    backbone = load_backbone(MINILM, random_init=True, config_overrides=rates)
    layers = [module for module in backbone.submodules if isinstance(module, tf_keras.layers.Dropout)]
    assert all(type(layer) is Dropout for layer in layers)
    # Embeddings, then per layer: attention probabilities, attention output, feed-forward output.
    layer_count = TINY_CONFIG["num_hidden_layers"]
    assert sorted(layer.rate for layer in layers) == [0.1] * (1 + 2 * layer_count) + [0.2] * layer_count
    ids = tf.constant([[101, 2023, 2003, 102]])
    reference = load_backbone(MINILM, random_init=True, config_overrides=rates)
    reference.set_weights(backbone.get_weights())
    assert use_fast_dropout(backbone) == 0  # already swapped
    np.testing.assert_allclose(
        backbone(input_ids=ids, training=False).last_hidden_state.numpy(),
        reference(input_ids=ids, training=False).last_hidden_state.numpy(),
    )
    training = backbone(input_ids=ids, training=True).last_hidden_state.numpy()
    assert not np.allclose(training, backbone(input_ids=ids, training=False).last_hidden_state.numpy())
