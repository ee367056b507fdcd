"""Token ids are cached across runs, keyed by the data and the tokenizer settings."""

import datasets

from tfbert.preprocessing import Preprocessor


def splits(texts):
    return datasets.DatasetDict(train=datasets.Dataset.from_dict({"text": texts, "label": [0] * len(texts)}))


def test_second_run_loads_token_ids_from_the_cache(tokenizer, tmp_path, caplog):
    caplog.set_level("INFO", logger="tfbert.preprocessing")
    first = Preprocessor(tokenizer, max_length=16)(splits(["a good film", "a bad one"]), cache_dir=str(tmp_path))
    assert "computed and cached" in caplog.text
    caplog.clear()
    again = Preprocessor(tokenizer, max_length=16)(splits(["a good film", "a bad one"]), cache_dir=str(tmp_path))
    assert "loaded from the cache" in caplog.text
    assert again["train"]["input_ids"] == first["train"]["input_ids"]
    caplog.clear()
    Preprocessor(tokenizer, max_length=4)(splits(["a good film", "a bad one"]), cache_dir=str(tmp_path))
    assert "computed and cached" in caplog.text  # other settings, other cache entry
    caplog.clear()
    Preprocessor(tokenizer, max_length=16)(splits(["other data"]), cache_dir=str(tmp_path))
    assert "computed and cached" in caplog.text  # other data, other cache entry
