"""The packed encoder (real tokens only) computes what the padded TFBertModel computes."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from tfbert import heads
from tfbert.classifier import build_classifier, encoder_features
from tfbert.export import ServingModule
from tfbert.packed import fused_query_key_value, packed_encoder_features
from tfbert.preprocessing import InGraphTokenizer

TEXTS = ["a fine film", "", "the plot drags on and on, for far too long, and nobody in it seems to care",
         "Ünïcödé and 漢字 and emoji 🙂", "ok"]
PAIRS = ["it is", "nothing", "yes", "a much longer second sentence than the first one", ""]
HEAD_CLASSES = [
    head for head in vars(heads).values()
    if inspect.isclass(head) and issubclass(head, heads.ClassificationHead) and head is not heads.ClassificationHead
]


@pytest.mark.parametrize("fused", [False, True], ids=["side_by_side_per_call", "fused_once"])
@pytest.mark.parametrize("shards", [1, 2, 3])
def test_packed_equals_padded(tiny_backbone, tokenizer, shards, fused):
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    query_key_value = fused_query_key_value(tiny_backbone) if fused else None
    for texts in ([tf.constant(TEXTS)], [tf.constant(TEXTS), tf.constant(PAIRS)]):
        input_ids, token_type_ids = in_graph.rows(*texts)
        packed = packed_encoder_features(
            tiny_backbone, input_ids, token_type_ids, hidden_states=True, shards=shards, query_key_value=query_key_value
        )
        padded = encoder_features(tiny_backbone, in_graph(*texts), hidden_states=True)
        mask = padded["attention_mask"].numpy().astype(bool)  # (batch, seq)
        np.testing.assert_array_equal(packed["attention_mask"].numpy(), padded["attention_mask"].numpy())
        np.testing.assert_allclose(
            packed["last_hidden_state"].numpy()[mask], padded["last_hidden_state"].numpy()[mask], atol=1e-5
        )
        np.testing.assert_allclose(packed["pooler_output"].numpy(), padded["pooler_output"].numpy(), atol=1e-5)
        hidden_mask = np.broadcast_to(mask[:, None], packed["hidden_states"].shape[:3])
        np.testing.assert_allclose(
            packed["hidden_states"].numpy()[hidden_mask], padded["hidden_states"].numpy()[hidden_mask], atol=1e-5
        )
        assert not packed["last_hidden_state"].numpy()[~mask].any()  # padding stays zero


@pytest.mark.parametrize("texts", [[], [""]], ids=["no texts", "one empty text"])
@pytest.mark.parametrize("shards", [1, 3])
def test_packed_takes_fewer_tokens_than_shards(tiny_backbone, tokenizer, texts, shards):
    """No texts (0 tokens), or one empty text ([CLS] [SEP]: 2 tokens) cut into 3 runs, some empty."""
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    input_ids, token_type_ids = in_graph.rows(tf.constant(texts, tf.string))
    features = packed_encoder_features(tiny_backbone, input_ids, token_type_ids, shards=shards)
    assert features["last_hidden_state"].shape[0] == features["pooler_output"].shape[0] == len(texts)
    if texts:
        padded = encoder_features(tiny_backbone, in_graph(tf.constant(texts)))
        np.testing.assert_allclose(features["pooler_output"], padded["pooler_output"], atol=1e-5)


@pytest.mark.parametrize("shards", [0, -1, 1.5, True])
def test_shards_must_be_a_positive_integer(tiny_backbone, tokenizer, shards):
    rows = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16).rows(tf.constant(TEXTS))
    with pytest.raises(ValueError, match=f"shards must be a positive integer.*got {shards!r}"):
        packed_encoder_features(tiny_backbone, *rows, shards=shards)


@pytest.mark.parametrize("shards", [1, 2])
def test_cls_only_computes_the_same_cls_outputs(tiny_backbone, tokenizer, shards):
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    for texts in ([tf.constant(TEXTS)], [tf.constant(TEXTS), tf.constant(PAIRS)]):
        input_ids, token_type_ids = in_graph.rows(*texts)
        full = packed_encoder_features(tiny_backbone, input_ids, token_type_ids)
        cls = packed_encoder_features(
            tiny_backbone, input_ids, token_type_ids, cls_only=True, shards=shards,
            query_key_value=fused_query_key_value(tiny_backbone),
        )
        assert cls["last_hidden_state"].shape == (len(TEXTS), 1, full["last_hidden_state"].shape[-1])
        np.testing.assert_array_equal(cls["attention_mask"].numpy(), np.ones((len(TEXTS), 1)))
        np.testing.assert_allclose(cls["last_hidden_state"][:, 0], full["last_hidden_state"][:, 0], atol=1e-5)
        np.testing.assert_allclose(cls["pooler_output"], full["pooler_output"], atol=1e-5)
    empty = packed_encoder_features(tiny_backbone, *in_graph.rows(tf.constant([], tf.string)), cls_only=True, shards=shards)
    assert empty["last_hidden_state"].shape[0] == 0 and empty["pooler_output"].shape[0] == 0


def test_cls_only_refuses_hidden_states(tiny_backbone, tokenizer):
    rows = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16).rows(tf.constant(TEXTS))
    with pytest.raises(ValueError, match="cannot return hidden_states"):
        packed_encoder_features(tiny_backbone, *rows, hidden_states=True, cls_only=True)


@pytest.mark.parametrize("head_class", HEAD_CLASSES, ids=lambda head_class: head_class.__name__)
def test_heads_that_read_only_cls_serve_as_the_keras_model(head_class, tiny_backbone, tokenizer):
    """A head's reads_cls_only is only true where serving's [CLS]-only top layer changes nothing."""
    arguments = {"num_layers": 2} if head_class is heads.LastLayersClsHead else {}  # the tiny BERT has 2 layers
    model = build_classifier(tiny_backbone, head_class(num_outputs=2, **arguments))
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    keras = model(in_graph(tf.constant(TEXTS)), training=False)
    served = ServingModule(model, in_graph, ["negative", "positive"]).serve_text(tf.constant(TEXTS))
    np.testing.assert_allclose(served["logits"], keras, atol=1e-5)
