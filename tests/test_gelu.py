import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from transformers import TFBertModel

from tests.conftest import MINILM, TINY_CONFIG
from tfbert.backbone import load_backbone
from tfbert.gelu import gelu, use_float32_gelu


def value_and_gradient(function, x, upstream):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = function(x)
    return y, tape.gradient(y, x, output_gradients=upstream)


def test_float32_values_and_gradients_are_tf_nn_gelu():
    x = tf.random.stateless_normal((4, 7, 64), seed=[1, 2]) * 3
    upstream = tf.random.stateless_normal(x.shape, seed=[3, 4])
    y, dx = value_and_gradient(gelu, x, upstream)
    y_ref, dx_ref = value_and_gradient(lambda t: tf.nn.gelu(t, approximate=False), x, upstream)
    np.testing.assert_allclose(y.numpy(), y_ref.numpy(), atol=1e-6)
    np.testing.assert_allclose(dx.numpy(), dx_ref.numpy(), atol=1e-6)


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_keeps_the_dtype_and_is_float32_gelu_rounded(dtype):
    x32 = tf.random.stateless_normal((3, 5, 32), seed=[5, 6]) * 3
    x = tf.cast(x32, dtype)  # the float32 reference reads the same rounded inputs
    upstream = tf.cast(tf.random.stateless_normal(x.shape, seed=[7, 8]), dtype)
    y, dx = value_and_gradient(gelu, x, upstream)
    assert y.dtype == dtype and dx.dtype == dtype
    y_ref, dx_ref = value_and_gradient(gelu, tf.cast(x, tf.float32), tf.cast(upstream, tf.float32))
    # Exactly the float32 results, rounded once to the half type.
    np.testing.assert_array_equal(y.numpy(), tf.cast(y_ref, dtype).numpy())
    np.testing.assert_array_equal(dx.numpy(), tf.cast(dx_ref, dtype).numpy())


def test_backbones_use_it_and_compute_what_transformers_computes():
    backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
    assert all(layer.intermediate.intermediate_act_fn is gelu for layer in backbone.bert.encoder.layer)
    reference = TFBertModel(backbone.config)  # transformers' own GELU
    reference.build_in_name_scope()
    reference.set_weights(backbone.get_weights())
    ids = tf.constant([[2, 5, 9, 11, 3, 0], [2, 7, 3, 0, 0, 0]])
    inputs = {"input_ids": ids, "attention_mask": tf.cast(ids > 0, tf.int32)}

    weights = tf.random.stateless_normal((2, 6, TINY_CONFIG["hidden_size"]), seed=[9, 9])

    def loss_and_gradients(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(inputs).last_hidden_state * weights)
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, gradients = loss_and_gradients(backbone)
    loss_ref, gradients_ref = loss_and_gradients(reference)
    np.testing.assert_allclose(loss.numpy(), loss_ref.numpy(), rtol=1e-5)
    assert [g is None for g in gradients] == [g is None for g in gradients_ref]  # the pooler's: None
    for gradient, gradient_ref in zip(gradients, gradients_ref):
        if gradient is None:
            continue
        expected = tf.convert_to_tensor(gradient_ref).numpy()
        # float32 rounding of sums of terms as large as the gradient's largest: near-zero elements
        # differ by that, not by their own size (seen: 3.8e-6 on -0.0052, in a gradient up to 80)
        np.testing.assert_allclose(tf.convert_to_tensor(gradient).numpy(), expected,
                                   rtol=1e-4, atol=1e-6 * max(1.0, np.abs(expected).max()))


def test_other_activations_are_left_alone():
    model = load_backbone(MINILM, random_init=True, config_overrides={**TINY_CONFIG, "hidden_act": "gelu_new"})
    before = [layer.intermediate.intermediate_act_fn for layer in model.bert.encoder.layer]
    use_float32_gelu(model)  # again: still not changed
    assert [layer.intermediate.intermediate_act_fn for layer in model.bert.encoder.layer] == before
    assert gelu not in before


def test_mixed_bfloat16_backbone_trains_through_it():
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    ids = tf.constant([[2, 5, 9, 3]])
    with tf.GradientTape() as tape:
        hidden = backbone({"input_ids": ids}, training=True).last_hidden_state
        loss = tf.reduce_sum(tf.cast(hidden, tf.float32) ** 2)
    gradients = tape.gradient(loss, backbone.trainable_variables)
    assert hidden.dtype == tf.bfloat16
    intermediate = backbone.bert.encoder.layer[0].intermediate.dense.kernel
    gradient = gradients[[v.ref() for v in backbone.trainable_variables].index(intermediate.ref())]
    assert gradient.dtype == tf.float32 and np.all(np.isfinite(gradient.numpy())) and np.any(gradient.numpy() != 0)
