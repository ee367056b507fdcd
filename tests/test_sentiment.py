from collections import Counter

import datasets
import pytest

from tests.conftest import write_snippets
from tfbert.tasks import InvalidTaskData, TaskData
from tfbert.tasks import sentiment
from tfbert.tasks.sentiment import CorpusUnavailable, cached_snippets, load_sentiment, read_snippets


def test_real_corpus_counts(vader_cache):
    texts, valences = read_snippets(vader_cache / "vader" / sentiment.SNIPPETS_FILE)
    assert len(texts) == 10605
    signs = Counter((v > 0) - (v < 0) for v in valences)
    assert signs == {1: 5242, -1: 5326, 0: 37}


def test_real_corpus_split(vader_cache):
    task = load_sentiment(cache_dir=str(vader_cache))
    sizes = {name: len(split) for name, split in task.splits.items()}
    assert sum(sizes.values()) == 10605 - 37  # zero-valence sentences dropped
    assert sizes["validation"] == sizes["test"] == pytest.approx(1057, abs=1)
    assert task.label_names == ("negative", "positive")
    for split in task.splits.values():
        for valence, label in zip(split["valence"], split["label"]):
            assert label == int(valence > 0)
    again = load_sentiment(cache_dir=str(vader_cache))
    assert again.splits["test"]["text"] == task.splits["test"]["text"]  # fixed, seeded split
    other_seed = load_sentiment(cache_dir=str(vader_cache), split_seed=7)
    assert other_seed.splits["test"]["text"] != task.splits["test"]["text"]


def test_cache_is_reused_without_fetching(vader_cache, monkeypatch):
    monkeypatch.setattr(sentiment, "_download_sdist", lambda: pytest.fail("fetched again"))
    assert cached_snippets(str(vader_cache)).is_file()


def test_checksum_mismatch_caches_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sentiment, "_download_sdist", lambda: b"not the archive")
    with pytest.raises(CorpusUnavailable, match="expected 5d7c06e0"):
        cached_snippets(str(tmp_path))
    assert "Fetching the VADER corpus" in capsys.readouterr().out
    assert not list(tmp_path.rglob("*.txt")) and not list(tmp_path.rglob("*.partial"))


def test_download_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setattr(sentiment, "SDIST_REQUIREMENT", "vaderSentiment==0.0.0.999")
    with pytest.raises(CorpusUnavailable, match="could not download vaderSentiment==0.0.0.999") as error:
        cached_snippets(str(tmp_path))
    assert "task.data_file" in str(error.value)
    assert not list(tmp_path.rglob("*.txt"))


def test_local_file_and_sample_limit(snippets_file):
    task = load_sentiment(data_file=str(snippets_file), max_train_samples=50)
    assert len(task.splits["train"]) == 50
    assert len(task.splits["validation"]) == len(task.splits["test"]) == 24
    assert "neutral" not in " ".join(text for split in task.splits.values() for text in split["text"])


def test_malformed_line_names_file_and_line(tmp_path):
    path = write_snippets(tmp_path / "bad.txt", rows=10)
    path.write_text(path.read_text() + "\n12\tnot-a-number\tsome text")
    with pytest.raises(ValueError, match=r"bad.txt, line 12: expected `id<TAB>mean valence<TAB>text`"):
        read_snippets(path)


def test_missing_local_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_sentiment(data_file=str(tmp_path / "missing.txt"))


def test_a_problem_type_the_corpus_cannot_serve_is_named_before_any_download(tmp_path, monkeypatch):
    monkeypatch.setattr(sentiment, "cached_snippets", lambda cache_dir: pytest.fail("no download expected"))
    with pytest.raises(InvalidTaskData, match="problem_type must be single_label .* or regression .*got 'multi_label'"):
        load_sentiment(problem_type="multi_label")


def splits_with(train_labels, test_labels=(0, 1)):
    features = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=["neg", "pos"]))

    def split(labels):
        return datasets.Dataset.from_dict({"text": ["x"] * len(labels), "label": list(labels)}, features=features)

    return datasets.DatasetDict(train=split(train_labels), validation=split(test_labels), test=split(test_labels))


def test_single_class_split_is_refused():
    with pytest.raises(InvalidTaskData, match=r"train split has a single class \('pos', 3 examples\)"):
        TaskData("toy", splits_with([1, 1, 1]), ("neg", "pos"))


def test_empty_split_is_refused():
    with pytest.raises(InvalidTaskData, match="the train split is empty"):
        TaskData("toy", splits_with([]), ("neg", "pos"))
