"""The in-graph tokenizer gives the ids the training tokenizer gives."""

import pytest
import tensorflow as tf

from tfbert.preprocessing import InGraphTokenizer
from tfbert.tasks.sentiment import load_sentiment

MAX_LENGTH = 64

TRICKY_TEXTS = {
    "accents": "Café déjà vu, naïve façade; ÀÉÎÕÜ Straße İstanbul",
    "punctuation": "Hello,world!!! $100 + 5% ~ a|b <tag> x=y ^_^ `q` don't (yes) [no] {ok}",
    "emoji": "I love it 😀🎉👍🏽 🇫🇷",
    "cjk": "北京欢迎你 東京 한국어 日本語です ab北cd \U00020001x",
    "empty": "",
    "whitespace": " \t\n\r\u3000\u2028 ",
    "control_characters": "x\x00y\u200bz\ufffd a\x0bb\x0cc\x85d",
    "greek_capital_sigma": "ΣΊΣΥΦΟΣ ς σ",
    "ligatures_and_full_width": "ﬁne ＦＵＬＬ ½ ² Ⅻ",
    "combining_marks": "e\u0301 n\u0303 soft\u00adhyphen",
    "other_scripts": "привет мир Ёж مرحبا بالعالم שלום",
    "long_word": "a" * 150,
    "very_long_text": " ".join(["word"] * 5000),
}


@pytest.fixture(scope="module")
def in_graph(tokenizer):
    return InGraphTokenizer.from_tokenizer(tokenizer, max_length=MAX_LENGTH)


def reference_ids(tokenizer, texts, pairs=None, max_length=MAX_LENGTH):
    return tokenizer(texts, pairs, truncation=True, max_length=max_length)


def unpadded(inputs: dict, name: str) -> list[list[int]]:
    """Rows of one padded (batch, seq) input, cut to their attention mask."""
    mask = inputs["attention_mask"].numpy().astype(bool)
    return [row[keep].tolist() for row, keep in zip(inputs[name].numpy(), mask)]


@pytest.mark.parametrize("case", sorted(TRICKY_TEXTS))
def test_in_graph_ids_equal_training_ids(case, in_graph, tokenizer):
    text = TRICKY_TEXTS[case]
    inputs = in_graph(tf.constant([text]))
    assert unpadded(inputs, "input_ids") == reference_ids(tokenizer, [text])["input_ids"]


def test_batch_is_padded_to_its_longest_row_only(in_graph, tokenizer):
    texts = ["short", "a somewhat longer sentence, with punctuation.", ""]
    inputs = in_graph(tf.constant(texts))
    reference = reference_ids(tokenizer, texts)
    longest = max(map(len, reference["input_ids"]))
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        assert inputs[name].dtype == tf.int32
        assert inputs[name].shape == (3, longest)
        assert unpadded(inputs, name) == reference[name]
    assert (inputs["input_ids"].numpy()[~inputs["attention_mask"].numpy().astype(bool)] == tokenizer.pad_token_id).all()


def test_long_texts_are_cut_to_max_length(in_graph, tokenizer):
    texts = [TRICKY_TEXTS["very_long_text"], "x " * 50_000, "x" * 100_000]
    inputs = in_graph(tf.constant(texts))
    assert inputs["input_ids"].shape == (3, MAX_LENGTH)
    assert unpadded(inputs, "input_ids") == reference_ids(tokenizer, texts)["input_ids"]


def test_bytes_that_are_not_utf8_are_dropped(in_graph, tokenizer):
    inputs = in_graph(tf.constant([b"ab\xff\xfe cd"]))
    assert unpadded(inputs, "input_ids") == reference_ids(tokenizer, ["ab cd"])["input_ids"]


@pytest.mark.parametrize("max_length", [5, 6, 7, 8, 12])
def test_pairs_are_cut_longest_first(max_length, tokenizer):
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=max_length)
    texts = ["one two three four five six seven", "a b", "x y z w", "long " * 20, ""]
    pairs = ["uno dos tres", "c d e f g h i j", "p q r s", "short", "only the pair"]
    inputs = in_graph(tf.constant(texts), tf.constant(pairs))
    reference = reference_ids(tokenizer, texts, pairs, max_length=max_length)
    assert unpadded(inputs, "input_ids") == reference["input_ids"]
    assert unpadded(inputs, "token_type_ids") == reference["token_type_ids"]


def test_whole_sentiment_corpus_tokenizes_identically(tokenizer, vader_cache):
    splits = load_sentiment(cache_dir=str(vader_cache)).splits
    texts = [text for split in splits.values() for text in split["text"]]
    in_graph = InGraphTokenizer.from_tokenizer(tokenizer, max_length=128)
    ids = unpadded(in_graph(tf.constant(texts)), "input_ids")
    reference = reference_ids(tokenizer, texts, max_length=128)["input_ids"]
    assert len(texts) == 10_568  # the movie-review snippets without the 37 rated 0
    assert [text for text, mine, theirs in zip(texts, ids, reference) if mine != theirs] == []


def test_settings_follow_the_training_tokenizer(in_graph, tokenizer):
    assert in_graph.lower_case is tokenizer.do_lower_case is True
    assert in_graph.strip_accents is True
    assert (in_graph.cls_id, in_graph.sep_id, in_graph.pad_id) == (
        tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id,
    )


def test_cased_tokenizer_keeps_case(tokenizer):
    vocab = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    cased = InGraphTokenizer(vocab, lower_case=False, max_length=16)
    assert cased.normalize(tf.constant(["Café ΣΑ"])).numpy()[0].decode() == "Café ΣΑ"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(max_length=2), "max_length must be at least 3"),
        (dict(max_length=8, cls_token="<s>"), r"special tokens \['<s>'\]"),
    ],
    ids=["max_length_too_small", "unknown_special_token"],
)
def test_bad_settings_are_refused(arguments, message, tokenizer):
    vocab = sorted(tokenizer.get_vocab(), key=tokenizer.get_vocab().get)
    with pytest.raises(ValueError, match=message):
        InGraphTokenizer(vocab, lower_case=True, **arguments)
