"""The packed encoder (real tokens only) computes what the padded TFBertModel computes."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import MINILM, TINY_CONFIG, sharpen
from tfbert import heads
from tfbert.backbone import load_backbone
from tfbert.classifier import build_classifier, encoder_features
from tfbert.export import ServingModule
from tfbert.packed import branch_weights, packed_encoder_features
from tfbert.preprocessing import InGraphTokenizer

TEXTS = ["a fine film", "", "the plot drags on and on, for far too long, and nobody in it seems to care",
         "Ünïcödé and 漢字 and emoji 🙂", "ok"]
PAIRS = ["it is", "nothing", "yes", "a much longer second sentence than the first one", ""]
HEAD_CLASSES = [
    head for head in vars(heads).values()
    if inspect.isclass(head) and issubclass(head, heads.ClassificationHead) and head is not heads.ClassificationHead
]


@pytest.fixture(scope="module")
def four_head_backbone():
    """The tiny BERT with 4 heads: 3 branches get 1, 1 and 2 heads, and 12, 12 and 13 of its 37 units."""
    return load_backbone(MINILM, random_init=True, config_overrides={**TINY_CONFIG, "num_attention_heads": 4})


def backbone_and_weights(request, branches: int | None):
    """(backbone, branch_weights or None); 3 branches need the 4-head BERT."""
    backbone = request.getfixturevalue("four_head_backbone" if branches == 3 else "tiny_backbone")
    return backbone, None if branches is None else branch_weights(backbone, branches)


@pytest.mark.parametrize("branches", [None, 1, 2, 3], ids=["per_call", "1", "2", "3_uneven"])
def test_packed_equals_padded(request, tokenizer, branches):
    backbone, weights = backbone_and_weights(request, branches)
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    for texts in ([tf.constant(TEXTS)], [tf.constant(TEXTS), tf.constant(PAIRS)]):
        input_ids, token_type_ids = in_graph.rows(*texts)
        packed = packed_encoder_features(backbone, input_ids, token_type_ids, hidden_states=True, branches=weights)
        padded = encoder_features(backbone, in_graph(*texts), hidden_states=True)
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


def test_branches_split_heads_and_units_in_consecutive_runs(four_head_backbone):
    weights = branch_weights(four_head_backbone, 3)
    assert len(weights) == TINY_CONFIG["num_hidden_layers"]
    head_size = TINY_CONFIG["hidden_size"] // 4
    attention = four_head_backbone.bert.encoder.layer[0].attention.self_attention
    # The second branch: head 1 of the query, key and value projections, units 12 to 24.
    second = weights[0][1]
    expected = np.concatenate([dense.kernel.numpy()[:, head_size : 2 * head_size]
                               for dense in (attention.query, attention.key, attention.value)], 1)
    np.testing.assert_array_equal(second["query_key_value_kernel"], expected)
    intermediate = four_head_backbone.bert.encoder.layer[0].intermediate.dense
    np.testing.assert_array_equal(second["intermediate_kernel"], intermediate.kernel.numpy()[:, 12:24])
    assert [part["query_key_value_kernel"].shape[1] for part in weights[0]] == [3 * head_size] * 2 + [6 * head_size]
    assert [part["intermediate_bias"].shape[0] for part in weights[0]] == [12, 12, 13]


@pytest.mark.parametrize("texts", [[], [""]], ids=["no texts", "one empty text"])
@pytest.mark.parametrize("branches", [1, 2])
def test_packed_takes_no_texts_and_empty_texts(tiny_backbone, tokenizer, texts, branches):
    """No texts (0 tokens), or one empty text ([CLS] [SEP]: 2 tokens)."""
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    input_ids, token_type_ids = in_graph.rows(tf.constant(texts, tf.string))
    features = packed_encoder_features(tiny_backbone, input_ids, token_type_ids, branches=branch_weights(tiny_backbone, branches))
    assert features["last_hidden_state"].shape[0] == features["pooler_output"].shape[0] == len(texts)
    if texts:
        padded = encoder_features(tiny_backbone, in_graph(tf.constant(texts)))
        np.testing.assert_allclose(features["pooler_output"], padded["pooler_output"], atol=1e-5)


@pytest.mark.parametrize("branches", [0, -1, 3, 1.5, True])
def test_branches_must_be_one_to_the_number_of_heads(tiny_backbone, branches):
    with pytest.raises(ValueError, match=f"branches must be an integer from 1 to the encoder's 2 attention heads.*got {branches!r}"):
        branch_weights(tiny_backbone, branches)


@pytest.mark.parametrize("branches", [1, 2, 3], ids=["1", "2", "3_uneven"])
def test_cls_only_computes_the_same_cls_outputs(request, tokenizer, branches):
    backbone, weights = backbone_and_weights(request, branches)
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    for texts in ([tf.constant(TEXTS)], [tf.constant(TEXTS), tf.constant(PAIRS)]):
        input_ids, token_type_ids = in_graph.rows(*texts)
        full = packed_encoder_features(backbone, input_ids, token_type_ids)
        cls = packed_encoder_features(backbone, input_ids, token_type_ids, cls_only=True, branches=weights)
        assert cls["last_hidden_state"].shape == (len(TEXTS), 1, full["last_hidden_state"].shape[-1])
        np.testing.assert_array_equal(cls["attention_mask"].numpy(), np.ones((len(TEXTS), 1)))
        np.testing.assert_allclose(cls["last_hidden_state"][:, 0], full["last_hidden_state"][:, 0], atol=1e-5)
        np.testing.assert_allclose(cls["pooler_output"], full["pooler_output"], atol=1e-5)
    empty = packed_encoder_features(backbone, *in_graph.rows(tf.constant([], tf.string)), cls_only=True, branches=weights)
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


def test_serves_a_model_built_in_mixed_precision(tokenizer):
    """Trained with trainer.precision=mixed_bfloat16, the export computes in bfloat16 as the model does."""
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    tf_keras.utils.set_random_seed(0)
    try:
        backbone = load_backbone(MINILM, random_init=True, config_overrides=TINY_CONFIG)
        head = heads.PoolerHead(num_outputs=2)
        model = build_classifier(backbone, head)
        sharpen(backbone, head)
        in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
        keras = tf.cast(model(in_graph(tf.constant(TEXTS)), training=False), tf.float32).numpy()
        served = ServingModule(model, in_graph, ["negative", "positive"]).serve_text(tf.constant(TEXTS))
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert served["probabilities"].dtype == tf.float32
    spread = np.ptp(keras, axis=0).max()  # how much the texts' logits differ
    assert spread > 2.0
    np.testing.assert_allclose(served["logits"], keras, atol=0.05 * spread)  # bfloat16 rounding, not texts
