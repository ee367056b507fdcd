"""The heads: what each pools (padding never counts), their configs and SavedModels, the MLP
every head can put before its logits, and the hidden_states the classifier hands only to
the heads that read them."""

import re

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import MINILM, TINY_CONFIG
from tfbert.backbone import load_backbone
from tfbert.classifier import INPUT_NAMES, build_classifier, encoder_features
from tfbert.heads import (
    AttentionPoolingHead,
    ClsHead,
    ClsMeanHead,
    LastLayersClsHead,
    MaxPoolingHead,
    MeanPoolingHead,
    PoolerHead,
    ScalarMixHead,
)

HEADS = {
    "pooler": lambda **kwargs: PoolerHead(3, **kwargs),
    "cls": lambda **kwargs: ClsHead(3, **kwargs),
    "mean": lambda **kwargs: MeanPoolingHead(3, **kwargs),
    "max": lambda **kwargs: MaxPoolingHead(3, **kwargs),
    "cls_mean": lambda **kwargs: ClsMeanHead(3, **kwargs),
    "last2_cls": lambda **kwargs: LastLayersClsHead(3, num_layers=2, **kwargs),
    "scalar_mix": lambda **kwargs: ScalarMixHead(3, **kwargs),
    "attention": lambda **kwargs: AttentionPoolingHead(3, **kwargs),
    "cls_mlp": lambda **kwargs: ClsHead(3, hidden_units=[16, 8], activation="tanh", **kwargs),
}
TEXTS = ["a short one", "a rather longer sentence about a film that drags on and on"]


def encode(backbone, tokenizer, texts, pad_to=None):
    """All encoder outputs a head may read, for `texts` padded to `pad_to` tokens."""
    padding = "max_length" if pad_to else "longest"
    tokens = tokenizer(texts, padding=padding, max_length=pad_to, return_tensors="np")
    tokens = {name: tf.constant(tokens[name], tf.int32) for name in INPUT_NAMES}
    return encoder_features(backbone, tokens, hidden_states=True)


@pytest.mark.parametrize("name", ["mean", "max", "cls_mean", "last2_cls", "scalar_mix", "attention"])
def test_padding_does_not_change_pooled_features(name, tiny_backbone, tokenizer):
    head = HEADS[name]()
    tight_features = encode(tiny_backbone, tokenizer, TEXTS)
    padded_features = encode(tiny_backbone, tokenizer, TEXTS, pad_to=40)
    assert padded_features["hidden_states"].shape[1:3] == (3, 40)  # embeddings + 2 layers
    head(tight_features)  # builds the head's weights, which pool reads
    np.testing.assert_allclose(
        head.pool(tight_features).numpy(), head.pool(padded_features).numpy(), atol=1e-5
    )


def test_max_pooling_ignores_padding_even_when_padding_is_larger():
    hidden = tf.constant([[[1.0, -2.0], [100.0, 100.0]]])  # second token is padding
    features = {"last_hidden_state": hidden, "attention_mask": tf.constant([[1, 0]])}
    np.testing.assert_array_equal(MaxPoolingHead(2).pool(features).numpy(), [[1.0, -2.0]])
    np.testing.assert_array_equal(MeanPoolingHead(2).pool(features).numpy(), [[1.0, -2.0]])


def test_pooler_head_reads_pooler_output(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    np.testing.assert_array_equal(PoolerHead(2).pool(features).numpy(), features["pooler_output"].numpy())


def test_cls_head_reads_first_token(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    np.testing.assert_array_equal(
        ClsHead(2).pool(features).numpy(), features["last_hidden_state"][:, 0].numpy()
    )


def features_with_loud_padding():
    """One example, two tokens; the second is padding with huge values."""
    states = tf.constant([[[[1.0, -2.0], [100.0, 100.0]]] * 3])  # (1, 3, 2, 2)
    return {
        "last_hidden_state": states[:, -1],
        "hidden_states": states,
        "attention_mask": tf.constant([[1, 0]]),
    }


@pytest.mark.parametrize("name", ["scalar_mix", "attention"])
def test_padding_gets_no_weight_however_large(name):
    head = HEADS[name]()
    features = features_with_loud_padding()
    head(features)
    np.testing.assert_allclose(head.pool(features).numpy(), [[1.0, -2.0]])


def test_cls_mean_is_cls_then_mean(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    pooled = ClsMeanHead(2).pool(features).numpy()
    np.testing.assert_array_equal(pooled[:, :32], features["last_hidden_state"][:, 0].numpy())
    np.testing.assert_allclose(pooled[:, 32:], MeanPoolingHead(2).pool(features).numpy())


def test_last_layers_cls_reads_top_layers_first(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    pooled = LastLayersClsHead(2, num_layers=2).pool(features).numpy()  # (batch, 2 * 32)
    states = features["hidden_states"].numpy()  # (batch, 3, seq, 32)
    np.testing.assert_array_equal(pooled[:, :32], features["last_hidden_state"][:, 0].numpy())
    np.testing.assert_array_equal(pooled[:, :32], states[:, 2, 0])
    np.testing.assert_array_equal(pooled[:, 32:], states[:, 1, 0])


def test_last_layers_cls_refuses_more_layers_than_the_encoder_has(tiny_backbone):
    with pytest.raises(ValueError, match="top 4 layers, but the encoder has 2; use num_layers between 1 and 2"):
        build_classifier(tiny_backbone, LastLayersClsHead(2, num_layers=4))


def test_scalar_mix_starts_as_the_average_and_learns_a_layer(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    head = ScalarMixHead(2)
    head(features)
    states = features["hidden_states"]  # (batch, 3, seq, hidden)
    average = dict(features, last_hidden_state=tf.reduce_mean(states, axis=1))
    np.testing.assert_allclose(head.pool(features).numpy(), MeanPoolingHead(2).pool(average).numpy(), atol=1e-6)
    head.layer_weights.assign([-50.0, 50.0, -50.0])  # all weight on layer 1
    layer_1 = dict(features, last_hidden_state=states[:, 1])
    np.testing.assert_allclose(head.pool(features).numpy(), MeanPoolingHead(2).pool(layer_1).numpy(), atol=1e-6)


def test_attention_starts_as_the_mean(tiny_backbone, tokenizer):
    features = encode(tiny_backbone, tokenizer, TEXTS)
    head = AttentionPoolingHead(2)
    head(features)
    np.testing.assert_allclose(head.pool(features).numpy(), MeanPoolingHead(2).pool(features).numpy(), atol=1e-6)


def test_mlp_sits_between_pooled_vector_and_logits():
    head = ClsHead(3, hidden_units=[16, 8])
    head({"last_hidden_state": tf.zeros((2, 5, 4)), "attention_mask": tf.ones((2, 5), tf.int32)})
    assert [layer.kernel.shape for layer in (*head.hidden_layers, head.output_layer)] == [(4, 16), (16, 8), (8, 3)]


@pytest.mark.parametrize("hidden_units", [[16, 0], [2.5], 256, "256"])
def test_bad_mlp_widths_are_named(hidden_units):
    with pytest.raises(ValueError, match=rf"a list of positive layer widths such as \[256\], got {re.escape(repr(hidden_units))}"):
        ClsHead(3, hidden_units=hidden_units)


@pytest.mark.parametrize("num_layers", [0, 2.5])
def test_a_bad_layer_count_is_named(num_layers):
    with pytest.raises(ValueError, match=f"num_layers must be a whole number above 0, got {num_layers}"):
        LastLayersClsHead(3, num_layers=num_layers)


def test_a_bad_activation_is_named_even_without_an_mlp():
    with pytest.raises(ValueError, match="activation must be a tf_keras activation name .* got 'nope'"):
        ClsHead(3, activation="nope")


@pytest.mark.parametrize("name", ["mean", "max", "cls_mean", "scalar_mix", "attention"])
def test_a_row_without_real_tokens_pools_to_zeros(name):
    """A hand-made attention mask (serve_ids takes any) can hold no real token: such a row
    pools to zeros in every pooling head, not to dtype.min (max) or its padding's mean."""
    head = HEADS[name]()
    features = features_with_loud_padding()
    features["attention_mask"] = tf.constant([[0, 0]])
    head(features)
    pooled = head.pool(features).numpy()
    np.testing.assert_array_equal(pooled[:, -2:], [[0.0, 0.0]])  # cls_mean: [CLS] first, then the mean
    assert np.isfinite(head(features).numpy()).all()


@pytest.mark.parametrize("initializer_range", [0, -0.02, "0.02", None])
def test_a_bad_initializer_range_is_named(initializer_range):
    with pytest.raises(ValueError, match=rf"initializer_range must be a number above 0 \(BERT's 0.02\), got {re.escape(repr(initializer_range))}"):
        ClsHead(3, initializer_range=initializer_range)


@pytest.mark.parametrize("dropout", [1.5, 1.0, -0.1, "0.1"])
def test_a_bad_dropout_rate_is_named(dropout):
    with pytest.raises(ValueError, match=rf"dropout must be a rate in \[0, 1\), got {re.escape(repr(dropout))}"):
        ClsHead(3, dropout=dropout)


def head_model(head, hidden=8, layers=2):
    """A functional model around one head: the encoder outputs it reads in, logits out."""
    inputs = {
        "last_hidden_state": tf_keras.Input((None, hidden), name="last_hidden_state"),
        "attention_mask": tf_keras.Input((None,), dtype=tf.int32, name="attention_mask"),
    }
    if "pooler_output" in head.reads:
        inputs["pooler_output"] = tf_keras.Input((hidden,), name="pooler_output")
    if "hidden_states" in head.reads:
        inputs["hidden_states"] = tf_keras.Input((layers + 1, None, hidden), name="hidden_states")
    return tf_keras.Model(inputs, head(inputs))


def random_features(head, batch=3, seq=5, hidden=8, layers=2):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int32)
    mask[0, 3:] = 0
    states = rng.normal(size=(batch, layers + 1, seq, hidden)).astype(np.float32)
    features = {"last_hidden_state": states[:, -1], "attention_mask": mask}
    if "pooler_output" in head.reads:
        features["pooler_output"] = rng.normal(size=(batch, hidden)).astype(np.float32)
    if "hidden_states" in head.reads:
        features["hidden_states"] = states
    return features


def randomize(model):
    """Non-trivial weights (zero-initialised queries and mixes would hide a lost weight)."""
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=weight.shape).astype(np.float32) for weight in model.get_weights()])


@pytest.mark.parametrize("name", HEADS)
def test_get_config_round_trip(name):
    head = HEADS[name](dropout=0.2, name="head")
    model = head_model(head)
    randomize(model)
    features = random_features(head)
    clone = type(head).from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone_model = head_model(clone)
    clone_model.set_weights(model.get_weights())
    np.testing.assert_allclose(clone_model(features).numpy(), model(features).numpy(), atol=1e-5)


@pytest.mark.parametrize("name", HEADS)
def test_saved_model_round_trip(name, tmp_path):
    head = HEADS[name](name="head")
    model = head_model(head)
    randomize(model)
    features = random_features(head)
    model.save(tmp_path / "model", save_format="tf")
    loaded = tf_keras.models.load_model(tmp_path / "model")
    assert type(loaded.get_layer("head")) is type(head)  # rebuilt from the registered class
    assert loaded.get_layer("head").get_config() == head.get_config()
    np.testing.assert_allclose(loaded(features).numpy(), model(features).numpy(), atol=1e-5)


class RecordingBackbone:
    """The tiny backbone, remembering the keyword arguments of each call."""

    def __init__(self, backbone):
        self.backbone = backbone
        self.bert = backbone.bert
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.backbone(**kwargs)


@pytest.mark.parametrize(
    "head, wants_hidden_states",
    [(MeanPoolingHead(2), False), (AttentionPoolingHead(2), False), (ScalarMixHead(2), True)],
    ids=["mean", "attention", "scalar_mix"],
)
def test_only_heads_that_read_hidden_states_get_them(head, wants_hidden_states, tiny_backbone):
    backbone = RecordingBackbone(tiny_backbone)
    model = build_classifier(backbone, head)
    (call,) = backbone.calls
    assert call["output_hidden_states"] is wants_hidden_states  # False overrides the BERT config too
    tokens = {name: tf.ones((1, 4), tf.int32) for name in INPUT_NAMES}
    assert model(tokens).shape == (1, 2)


@pytest.fixture(scope="module")
def fresh_backbone():
    """A tiny BERT of this module's own, whose weights training may change."""
    return load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)


@pytest.mark.parametrize("name", HEADS)
def test_trains_and_exports_inside_the_classifier(name, fresh_backbone, tmp_path):
    tf_keras.utils.set_random_seed(0)
    model = build_classifier(fresh_backbone, HEADS[name](name="head"))
    rng = np.random.default_rng(0)
    tokens = {
        "input_ids": rng.integers(1000, 2000, size=(8, 6)).astype(np.int32),
        "attention_mask": np.repeat([[1, 1, 1, 1, 0, 0], [1] * 6], 4, axis=0).astype(np.int32),
        "token_type_ids": np.zeros((8, 6), np.int32),
    }
    labels = rng.integers(0, 3, size=8)
    model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    head_weights = [weight.numpy() for weight in model.get_layer("head").trainable_weights]
    history = model.fit(tokens, labels, batch_size=4, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    trained = model.get_layer("head").trainable_weights
    assert all(not np.allclose(before, after.numpy()) for before, after in zip(head_weights, trained))

    serve = tf.function(
        lambda input_ids, attention_mask, token_type_ids: model(
            {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        ),
        input_signature=[tf.TensorSpec([None, None], tf.int32, name=name) for name in INPUT_NAMES],
    )
    module = tf.Module()
    module.model = model
    tf.saved_model.save(module, str(tmp_path / "export"), signatures={"serving_default": serve})
    exported = tf.saved_model.load(str(tmp_path / "export")).signatures["serving_default"]
    (logits,) = exported(**{name: tf.constant(value) for name, value in tokens.items()}).values()
    np.testing.assert_allclose(logits.numpy(), model(tokens).numpy(), atol=1e-5)
