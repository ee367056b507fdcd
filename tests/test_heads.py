import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tfbert.heads import ClsHead, MaxPoolingHead, MeanPoolingHead, PoolerHead

HEADS = [PoolerHead, ClsHead, MeanPoolingHead, MaxPoolingHead]


def encode(backbone, tokenizer, texts, pad_to=None):
    """Backbone outputs as a head reads them, for `texts` padded to `pad_to` tokens."""
    padding = "max_length" if pad_to else "longest"
    tokens = tokenizer(texts, padding=padding, max_length=pad_to, return_tensors="np")
    tokens = {name: tf.constant(tokens[name], tf.int32) for name in ("input_ids", "attention_mask", "token_type_ids")}
    outputs = backbone(**tokens)
    return {
        "last_hidden_state": outputs.last_hidden_state,
        "pooler_output": outputs.pooler_output,
        "attention_mask": tokens["attention_mask"],
    }


TEXTS = ["a short one", "a rather longer sentence about a film that drags on and on"]


@pytest.mark.parametrize("head_class", [MeanPoolingHead, MaxPoolingHead], ids=["mean", "max"])
def test_padding_does_not_change_pooled_features(head_class, tiny_backbone, tokenizer):
    head = head_class(num_outputs=2)
    tight = head.pool(encode(tiny_backbone, tokenizer, TEXTS))
    padded_features = encode(tiny_backbone, tokenizer, TEXTS, pad_to=40)
    assert padded_features["attention_mask"].shape[1] == 40
    padded = head.pool(padded_features)
    np.testing.assert_allclose(tight.numpy(), padded.numpy(), atol=1e-5)


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


def head_model(head, hidden=8):
    """A functional model around one head: its encoder-output dict in, logits out."""
    inputs = {
        "last_hidden_state": tf_keras.Input((None, hidden), name="last_hidden_state"),
        "pooler_output": tf_keras.Input((hidden,), name="pooler_output"),
        "attention_mask": tf_keras.Input((None,), dtype=tf.int32, name="attention_mask"),
    }
    return tf_keras.Model(inputs, head(inputs))


def random_features(batch=3, seq=5, hidden=8):
    rng = np.random.default_rng(0)
    mask = np.ones((batch, seq), np.int32)
    mask[0, 3:] = 0
    return {
        "last_hidden_state": rng.normal(size=(batch, seq, hidden)).astype(np.float32),
        "pooler_output": rng.normal(size=(batch, hidden)).astype(np.float32),
        "attention_mask": mask,
    }


@pytest.mark.parametrize("head_class", HEADS, ids=lambda cls: cls.__name__)
def test_get_config_round_trip(head_class):
    head = head_class(num_outputs=3, dropout=0.2, name="head")
    model = head_model(head)
    features = random_features()
    clone = head_class.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone_model = head_model(clone)
    clone_model.set_weights(model.get_weights())
    np.testing.assert_allclose(clone_model(features).numpy(), model(features).numpy(), atol=1e-6)


@pytest.mark.parametrize("head_class", HEADS, ids=lambda cls: cls.__name__)
def test_saved_model_round_trip(head_class, tmp_path):
    model = head_model(head_class(num_outputs=3, name="head"))
    features = random_features()
    model.save(tmp_path / "model", save_format="tf")
    loaded = tf_keras.models.load_model(tmp_path / "model")
    assert type(loaded.get_layer("head")) is head_class  # rebuilt from the registered class
    np.testing.assert_allclose(loaded(features).numpy(), model(features).numpy(), atol=1e-6)
