"""task=hub: hub splits become a task (class names from a ClassLabel); no hub, a way on named."""

import datasets
import pytest

from tfbert.tasks import InvalidTaskData
from tfbert.tasks.hub import load_hub

SENTENCES = [f"{word} film number {i}" for i in range(40) for word in ("a fine", "a dull")]


def fake_hub(calls):
    """A datasets.load_dataset that serves SST-2-shaped splits and records what was asked."""
    features = datasets.Features(
        sentence=datasets.Value("string"), label=datasets.ClassLabel(names=["negative", "positive"])
    )

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        rows = SENTENCES if split == "train" else SENTENCES[:20]
        labels = [int(sentence.startswith("a fine")) for sentence in rows]
        return datasets.Dataset.from_dict({"sentence": rows, "label": labels}, features=features)

    return load_dataset


def test_glue_style_splits_test_on_validation_and_carve_validation(monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_hub(calls))
    task = load_hub("glue", "sst2", validation_split=None, test_split="validation", text_column="sentence", task_name="sst2")
    assert sorted(calls) == [("glue", "sst2", "train"), ("glue", "sst2", "validation")]
    assert task.name == "sst2" and task.label_names == ("negative", "positive")  # the ClassLabel's order
    assert {split: len(rows) for split, rows in task.splits.items()} == {"train": 72, "validation": 8, "test": 20}
    assert task.provenance["test"] == "glue/sst2 [validation]"


def test_an_unreachable_hub_says_what_else_works(monkeypatch):
    def offline(path, name, split):
        raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"Couldn't reach 'glue'.*glue/sst2 is downloaded on first use.*use task=files"):
        load_hub("glue", "sst2", text_column="sentence")


def test_a_namespaced_dataset_names_a_plain_export_directory(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", fake_hub([]))
    task = load_hub("stanfordnlp/sst2", None, text_column="sentence")
    assert task.name == "stanfordnlp-sst2" and task.provenance["train"] == "stanfordnlp/sst2 [train]"
    with pytest.raises(InvalidTaskData, match="a task's name names its export directory: a plain directory name, got 'a/b'"):
        load_hub("glue", "sst2", text_column="sentence", task_name="a/b")
