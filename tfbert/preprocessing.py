"""Text to token ids with the backbone's own vocabulary and casing."""

import datasets
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tfbert.backbone import resolve_model_dir

TEXT_COLUMNS = ("text", "text_pair")


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

    def __call__(self, splits: datasets.DatasetDict) -> datasets.DatasetDict:
        """The splits with token-id columns added (text columns kept for reports)."""
        return splits.map(self._encode, batched=True, batch_size=1000, desc="Tokenizing")
