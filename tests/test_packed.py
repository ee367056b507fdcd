"""The packed encoder (real tokens only) computes what the padded TFBertModel computes."""

import numpy as np
import tensorflow as tf

from tfbert.classifier import encoder_features
from tfbert.packed import packed_encoder_features
from tfbert.preprocessing import InGraphTokenizer

TEXTS = ["a fine film", "", "the plot drags on and on, for far too long, and nobody in it seems to care",
         "Ünïcödé and 漢字 and emoji 🙂", "ok"]
PAIRS = ["it is", "nothing", "yes", "a much longer second sentence than the first one", ""]


def test_packed_equals_padded(tiny_backbone, tokenizer):
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16)
    for texts in ([tf.constant(TEXTS)], [tf.constant(TEXTS), tf.constant(PAIRS)]):
        input_ids, token_type_ids = in_graph.rows(*texts)
        packed = packed_encoder_features(tiny_backbone, input_ids, token_type_ids, hidden_states=True)
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


def test_packed_takes_an_empty_batch(tiny_backbone, tokenizer):
    input_ids, token_type_ids = InGraphTokenizer.from_tokenizer(tokenizer, max_length=16).rows(tf.constant([], tf.string))
    features = packed_encoder_features(tiny_backbone, input_ids, token_type_ids)
    assert features["last_hidden_state"].shape[0] == 0 and features["pooler_output"].shape[0] == 0
