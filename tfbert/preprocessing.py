"""Text to token ids with the backbone's own vocabulary and casing.

Training tokenizes once, ahead of time, with the Hugging Face tokenizer (Preprocessor);
the exported SavedModel tokenizes raw strings in its graph (InGraphTokenizer), built
from the same tokenizer's vocabulary and settings.
"""

import logging
import os
from pathlib import Path

import datasets
import tensorflow as tf
from datasets.fingerprint import Hasher
import tensorflow_text as tf_text
from transformers import AutoTokenizer, BertTokenizer, BertTokenizerFast, PreTrainedTokenizerBase

from tfbert.model_dir import resolve_model_dir
from tfbert.tasks.task_data import column

TEXT_COLUMNS = ("text", "text_pair")
log = logging.getLogger(__name__)


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer stored beside the backbone `name_or_path`."""
    return AutoTokenizer.from_pretrained(resolve_model_dir(name_or_path, weights=False))


class Preprocessor:
    """Tokenizes every split once: `text` [, `text_pair`] -> `input_ids`, `token_type_ids`.

    Args:
        tokenizer: the backbone's tokenizer.
        max_length: longest sequence, special tokens included; longer texts are cut.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def _encode(self, batch: dict) -> dict:
        pair = batch.get("text_pair")
        encoded = self.tokenizer(
            batch["text"],
            pair,
            truncation=True,
            max_length=self.max_length,
            return_attention_mask=False,
            return_token_type_ids=True,
        )
        return {"input_ids": encoded["input_ids"], "token_type_ids": encoded["token_type_ids"]}

    def __call__(self, splits: datasets.DatasetDict, cache_dir: str | None = None) -> datasets.DatasetDict:
        """The splits with token-id columns added (text columns kept for reports).

        Token ids are cached under `cache_dir` (default: datasets' cache), keyed by each
        split's content fingerprint and this preprocessor (tokenizer and max_length), so
        a second run on the same data and tokenizer loads them instead of tokenizing.
        """
        directory = Path(cache_dir or datasets.config.HF_DATASETS_CACHE) / "tfbert_tokens"
        directory.mkdir(parents=True, exist_ok=True)
        key = Hasher.hash(self._encode)
        files = {name: str(directory / f"{split._fingerprint}-{key}.arrow") for name, split in splits.items()}
        cached = all(os.path.exists(path) for path in files.values())
        tokenized = splits.map(
            self._encode, batched=True, batch_size=1000, desc="Tokenizing", cache_file_names=files
        )
        log.info("token ids %s %s", "loaded from the cache in" if cached else "computed and cached in", directory)
        return tokenized

    def count_truncated(self, tokenized: datasets.Dataset) -> int:
        """How many examples of a tokenized split were cut to max_length."""
        full = [row for row, ids in enumerate(column(tokenized, "input_ids")) if len(ids) == self.max_length]
        if not full:
            return 0
        candidates = tokenized.select(full)
        pair = column(candidates, "text_pair") if "text_pair" in candidates.column_names else None
        lengths = self.tokenizer(column(candidates, "text"), pair, return_length=True)["length"]
        return sum(length > self.max_length for length in lengths)


class InGraphTokenizer(tf.Module):
    """Raw strings -> BERT token ids inside the TensorFlow graph, as the training tokenizer gives them.

    A SavedModel holding it needs only tensorflow and tensorflow_text to serve raw text.
    It reproduces the Hugging Face BERT tokenizer (BertNormalizer, BertPreTokenizer,
    WordPiece): drop control characters and U+FFFD, map whitespace to spaces, optionally
    strip accents (NFD, drop nonspacing marks) and lowercase per character, split on
    whitespace, punctuation and CJK characters, then WordPiece. Bytes that are not UTF-8
    become U+FFFD first, and so are dropped. Known difference: a word longer than 100
    *bytes* (HF counts 100 *characters*) becomes [UNK], which only matters for words
    of 34-100 non-ASCII characters.

    Args:
        vocab: the WordPiece vocabulary, in token-id order.
        lower_case: lowercase the text, as the backbone was trained (`do_lower_case`).
        max_length: longest sequence, special tokens included; longer texts are cut
            as `truncation=True` cuts them ("longest_first" for pairs).
        strip_accents: drop accents; None follows `lower_case`, as in BERT.
        cls_token, sep_token, pad_token, unk_token: the special tokens, all in `vocab`.
    """

    def __init__(
        self,
        vocab,
        lower_case: bool,
        max_length: int,
        strip_accents: bool | None = None,
        cls_token: str = "[CLS]",
        sep_token: str = "[SEP]",
        pad_token: str = "[PAD]",
        unk_token: str = "[UNK]",
    ):
        super().__init__()
        vocab = list(vocab)
        missing = [token for token in (cls_token, sep_token, pad_token, unk_token) if token not in vocab]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary of {len(vocab)} tokens")
        if max_length < 3:
            raise ValueError(f"max_length must be at least 3 ([CLS] x [SEP]), got {max_length}")
        self.lower_case = lower_case
        self.strip_accents = lower_case if strip_accents is None else strip_accents
        self.max_length = max_length
        self.cls_id = vocab.index(cls_token)
        self.sep_id = vocab.index(sep_token)
        self.pad_id = vocab.index(pad_token)
        self.wordpiece = tf_text.FastBertTokenizer(
            vocab, unknown_token=unk_token, token_out_type=tf.int32, lower_case_nfd_strip_accents=False
        )

    @staticmethod
    def check_reproducible(tokenizer: PreTrainedTokenizerBase) -> None:
        """Raise ValueError unless `tokenizer` is one the graph reproduces (BERT WordPiece): a run
        checks this before training, since its export tokenizes in the graph."""
        if not isinstance(tokenizer, (BertTokenizer, BertTokenizerFast)):
            raise ValueError(
                f"in-graph tokenization (what the export serves) reproduces BERT WordPiece tokenizers only, "
                f"got {type(tokenizer).__name__}; use a backbone with a BertTokenizer"
            )

    @classmethod
    def from_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, max_length: int) -> "InGraphTokenizer":
        """The in-graph twin of a Hugging Face BERT (WordPiece) tokenizer."""
        cls.check_reproducible(tokenizer)
        vocab = sorted(tokenizer.get_vocab().items(), key=lambda token_id: token_id[1])
        return cls(
            vocab=[token for token, _ in vocab],
            lower_case=tokenizer.do_lower_case,
            max_length=max_length,
            strip_accents=tokenizer.init_kwargs.get("strip_accents"),
            cls_token=tokenizer.cls_token,
            sep_token=tokenizer.sep_token,
            pad_token=tokenizer.pad_token,
            unk_token=tokenizer.unk_token,
        )

    def normalize(self, text: tf.Tensor) -> tf.Tensor:
        """(batch,) strings -> (batch,) strings cleaned, spaced and cased as BertNormalizer does."""
        text = tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")
        # Control and format characters, NUL and U+FFFD go; tab, newline and CR are spaces.
        text = tf.strings.regex_replace(text, r"[\x{0}\x{FFFD}]|[^\t\n\r\P{C}]", "")
        text = tf.strings.regex_replace(text, r"[\t\n\r\p{Zs}\x{2028}\x{2029}]", " ")
        text = tf.strings.regex_replace(text, CJK_CHARACTER, r" \1 ")
        if self.strip_accents:
            text = tf.strings.regex_replace(tf_text.normalize_utf8(text, "NFD"), r"\p{Mn}", "")
        if self.lower_case:
            # HF lowercases character by character: capital sigma is always σ, never final ς.
            text = tf.strings.lower(tf.strings.regex_replace(text, "Σ", "σ"), encoding="utf-8")
        return text

    def _wordpieces(self, text: tf.Tensor) -> tf.RaggedTensor:
        """(batch,) strings -> (batch, None) int32 WordPiece ids, no special tokens."""
        return self.wordpiece.tokenize(self.normalize(text))

    def rows(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> tuple[tf.RaggedTensor, tf.RaggedTensor]:
        """(batch,) strings [and their (batch,) pairs] -> ragged int32 (batch, None) token rows.

        Each row is [CLS] text [SEP] [text_pair [SEP]], at most max_length long:
        returns (input_ids, token_type_ids).
        """
        if text_pair is None:
            segments = [self._wordpieces(text)[:, : self.max_length - 2]]
        else:
            segments = _truncate_longest_first(
                self._wordpieces(text), self._wordpieces(text_pair), self.max_length - 3
            )
        return tf_text.combine_segments(segments, self.cls_id, self.sep_id)

    def __call__(self, text: tf.Tensor, text_pair: tf.Tensor | None = None) -> dict:
        """(batch,) strings [and their (batch,) pairs] -> int32 (batch, seq) model inputs.

        `seq` is the longest row of this batch (see `rows`); shorter rows are padded
        with [PAD] ids.
        """
        input_ids, token_type_ids = self.rows(text, text_pair)
        return {
            "input_ids": input_ids.to_tensor(default_value=self.pad_id),
            "attention_mask": tf.ones_like(input_ids).to_tensor(default_value=0),
            "token_type_ids": token_type_ids.to_tensor(default_value=0),
        }


# The CJK ideograph blocks that BertNormalizer puts spaces around (handle_chinese_chars).
CJK_CHARACTER = (
    r"([\x{4E00}-\x{9FFF}\x{3400}-\x{4DBF}\x{20000}-\x{2A6DF}\x{2A700}-\x{2B73F}"
    r"\x{2B740}-\x{2B81F}\x{2B920}-\x{2CEAF}\x{F900}-\x{FAFF}\x{2F800}-\x{2FA1F}])"
)


def _truncate_longest_first(first: tf.RaggedTensor, second: tf.RaggedTensor, budget: int) -> list:
    """Cut a pair of (batch, None) token rows to `budget` tokens in all, as HF "longest_first" does.

    The shorter row keeps its length up to half the budget; the longer one gets the rest.
    """
    first_length, second_length = first.row_lengths(), second.row_lengths()
    shorter_kept = tf.minimum(tf.minimum(first_length, second_length), budget // 2)
    longer_kept = budget - shorter_kept
    fits = first_length + second_length <= budget
    first_is_shorter = first_length <= second_length
    first_kept = tf.where(fits, first_length, tf.where(first_is_shorter, shorter_kept, longer_kept))
    second_kept = tf.where(fits, second_length, tf.where(first_is_shorter, longer_kept, shorter_kept))
    return [
        tf.ragged.boolean_mask(first, tf.ragged.range(first_length) < first_kept[:, tf.newaxis]),
        tf.ragged.boolean_mask(second, tf.ragged.range(second_length) < second_kept[:, tf.newaxis]),
    ]
