"""What every task hands to training: splits with `text` and `label`, and label names."""

from collections import Counter
from dataclasses import dataclass

import datasets

SPLITS = ("train", "validation", "test")


class InvalidTaskData(ValueError):
    """A task's data cannot be trained on; the message says which split and why."""


@dataclass(frozen=True)
class TaskData:
    """Splits of one task.

    Args:
        name: short task name, used in run directories and model cards.
        splits: `train`, `validation` and `test`, each with a `text` column and an
            integer `label` column indexing `label_names`.
        label_names: class names, in label-id order.
        max_length: longest token sequence fed to the encoder; longer texts are cut.
    """

    name: str
    splits: datasets.DatasetDict
    label_names: tuple[str, ...]
    max_length: int = 128

    def __post_init__(self):
        missing = [split for split in SPLITS if split not in self.splits]
        if missing:
            raise InvalidTaskData(
                f"task {self.name!r} has no {', '.join(missing)} split "
                f"(found: {', '.join(self.splits) or 'none'})"
            )
        for split in SPLITS:
            counts = Counter(self.splits[split]["label"])
            if not counts:
                raise InvalidTaskData(f"task {self.name!r}: the {split} split is empty")
            if len(counts) < 2:
                (only,) = counts
                raise InvalidTaskData(
                    f"task {self.name!r}: the {split} split has a single class "
                    f"({self.label_names[only]!r}, {counts[only]} examples); "
                    f"a classifier needs at least two of {list(self.label_names)}"
                )
        if self.max_length < 3:
            raise InvalidTaskData(f"max_length must be at least 3 ([CLS] x [SEP]), got {self.max_length}")


def split_train_validation_test(
    dataset: datasets.Dataset, validation_size: float, test_size: float, seed: int
) -> datasets.DatasetDict:
    """A seeded, label-stratified train/validation/test split of one dataset."""
    held_out = validation_size + test_size
    first = dataset.train_test_split(test_size=held_out, seed=seed, stratify_by_column="label")
    second = first["test"].train_test_split(
        test_size=test_size / held_out, seed=seed, stratify_by_column="label"
    )
    return datasets.DatasetDict(
        train=first["train"], validation=second["train"], test=second["test"]
    )


def limit_train_samples(splits: datasets.DatasetDict, max_train_samples: int | None):
    """Keep the first `max_train_samples` training examples (for quick runs)."""
    if max_train_samples is None or max_train_samples >= len(splits["train"]):
        return splits
    if max_train_samples < 1:
        raise InvalidTaskData(f"max_train_samples must be positive, got {max_train_samples}")
    limited = datasets.DatasetDict(splits)
    limited["train"] = splits["train"].select(range(max_train_samples))
    return limited
