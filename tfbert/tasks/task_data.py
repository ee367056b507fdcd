"""What every task hands to training: splits with `text` [, `text_pair`] and `label`."""

import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from datasets.utils.stratify import stratified_shuffle_split_generate_indices

from tfbert.checks import is_number, is_whole_number

log = logging.getLogger(__name__)
SPLITS = ("train", "validation", "test")
PROBLEM_TYPES = ("single_label", "multi_label", "regression")


class InvalidTaskData(ValueError):
    """A task's data cannot be trained on; the message says where and why."""


def column(dataset: datasets.Dataset, name: str) -> list:
    """A whole column of `dataset` as a list, read at once.

    (Iterating datasets' Column, or handing it to numpy, reads it row by row: seconds
    for the 10k sentiment sentences instead of milliseconds.)
    """
    return dataset[name][:]


@dataclass(frozen=True)
class TaskData:
    """Splits of one task and what their labels mean.

    Args:
        name: short task name, used in run directories and model cards.
        splits: `train`, `validation` and `test`, each with a `text` column (and
            `text_pair` for sentence pairs) and a `label` column: a class id for
            single_label, a multi-hot float vector for multi_label, a float for regression.
        label_names: class names in label-id order; for regression, the target's name.
        max_length: longest token sequence fed to the encoder; longer texts are cut.
        problem_type: `single_label`, `multi_label` or `regression`.
        threshold: multi_label decision threshold on each class probability.
        class_weight: None, `balanced`, or one weight per class (single_label only).
        provenance: how each split was obtained (file, hub split, carved from train).
    """

    name: str
    splits: datasets.DatasetDict
    label_names: tuple[str, ...]
    max_length: int = 128
    problem_type: str = "single_label"
    threshold: float = 0.5
    class_weight: str | list | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.problem_type not in PROBLEM_TYPES:
            raise InvalidTaskData(
                f"task {self.name!r}: problem_type {self.problem_type!r} is not one of {list(PROBLEM_TYPES)}"
            )
        missing = [split for split in SPLITS if split not in self.splits]
        if missing:
            raise InvalidTaskData(
                f"task {self.name!r} has no {', '.join(missing)} split "
                f"(found: {', '.join(self.splits) or 'none'})"
            )
        for split in SPLITS:
            if len(self.splits[split]) == 0:
                raise InvalidTaskData(f"task {self.name!r}: the {split} split is empty")
        if self.problem_type == "single_label":
            for split in SPLITS:
                counts = Counter(column(self.splits[split], "label"))
                if len(counts) < 2:
                    (only,) = counts
                    raise InvalidTaskData(
                        f"task {self.name!r}: the {split} split has a single class "
                        f"({self.label_names[only]!r}, {counts[only]} examples); "
                        f"a classifier needs at least two of {list(self.label_names)}"
                    )
        if self.problem_type != "regression":
            self._check_classes_trained()
        if not is_whole_number(self.max_length, 3):
            raise InvalidTaskData(
                f"max_length must be a whole number, at least 3 ([CLS] x [SEP]), got {self.max_length!r}"
            )
        if not is_number(self.threshold) or not 0 < self.threshold < 1:
            raise InvalidTaskData(f"threshold must be between 0 and 1, got {self.threshold}")
        self.class_weights()  # validates class_weight early

    def _check_classes_trained(self) -> None:
        """A held-out split's classes must each have a training example (the model cannot
        learn one it never sees; task.max_train_samples can cut one out); a class of
        label_names that no split holds only warrants a warning."""
        trained = self._classes("train")
        for split in ("validation", "test"):
            unlearnt = sorted(self._classes(split) - trained)
            if unlearnt:
                raise InvalidTaskData(
                    f"task {self.name!r}: the {split} split holds class(es) {[self.label_names[i] for i in unlearnt]} "
                    f"that no training example has ({len(self.splits['train'])} training rows; "
                    "task.max_train_samples keeps only the first rows of train): train needs every class it is scored on"
                )
        untrained = [name for index, name in enumerate(self.label_names) if index not in trained]
        if untrained:
            log.warning("task %s: no training example of class(es) %s; the model will not learn them", self.name, untrained)

    def _classes(self, split: str) -> set[int]:
        """The class ids some example of `split` holds."""
        labels = column(self.splits[split], "label")
        if self.problem_type == "multi_label":
            return set(np.flatnonzero(np.asarray(labels, np.float32).reshape(len(labels), -1).any(axis=0)).tolist())
        return set(labels)

    @property
    def num_outputs(self) -> int:
        """Logits the classifier needs: one per class, or one regression target."""
        return len(self.label_names)

    @property
    def has_pairs(self) -> bool:
        return "text_pair" in self.splits["train"].column_names

    def class_weights(self) -> dict[int, float] | None:
        """Keras `class_weight` for fit: None, or a weight per class id."""
        if self.class_weight is None:
            return None
        if self.problem_type != "single_label":
            raise InvalidTaskData(
                f"task {self.name!r}: class_weight applies to single_label tasks, not {self.problem_type}"
            )
        if self.class_weight == "balanced":
            counts = np.bincount(column(self.splits["train"], "label"), minlength=self.num_outputs)
            weights = len(self.splits["train"]) / (self.num_outputs * np.maximum(counts, 1))
            return {index: float(weight) for index, weight in enumerate(weights)}
        weights = self.class_weight
        listed = isinstance(weights, Sequence) and not isinstance(weights, str) and len(weights) == self.num_outputs
        if not listed or not all(is_number(weight) and weight > 0 for weight in weights):
            raise InvalidTaskData(
                f"task {self.name!r}: class_weight must be `balanced` or {self.num_outputs} positive "
                f"weights, one per class of {list(self.label_names)}; got {self.class_weight!r}"
            )
        return {index: float(weight) for index, weight in enumerate(weights)}

    def summary(self) -> dict:
        """What a run records about its data (task.json)."""
        return {
            "name": self.name,
            "problem_type": self.problem_type,
            "label_names": list(self.label_names),
            "max_length": self.max_length,
            "threshold": self.threshold if self.problem_type == "multi_label" else None,
            "text_pair": self.has_pairs,
            "class_weights": self.class_weights(),
            "sizes": {split: len(self.splits[split]) for split in SPLITS},
            "provenance": self.provenance,
            # datasets' hashes of each split's content: a resumed run checks it has the same data
            "fingerprints": {split: self.splits[split]._fingerprint for split in SPLITS},
        }


@dataclass(frozen=True)
class TaskSpec:
    """A trained task without its data: what its classifier and export need, read back from
    the run's task.json (`TaskData.summary`), so a re-export serves the labels the model
    learned whatever the data files hold now, and needs no data at all."""

    name: str
    problem_type: str
    label_names: tuple[str, ...]
    max_length: int
    threshold: float
    has_pairs: bool

    @property
    def num_outputs(self) -> int:
        return len(self.label_names)

    @classmethod
    def read(cls, path: Path) -> "TaskSpec":
        summary = json.loads(Path(path).read_text())
        try:
            return cls(
                name=summary["name"],
                problem_type=summary["problem_type"],
                label_names=tuple(summary["label_names"]),
                max_length=summary["max_length"],
                threshold=0.5 if summary["threshold"] is None else summary["threshold"],
                has_pairs=summary["text_pair"],
            )
        except KeyError as missing:
            raise ValueError(f"{path} has no {missing} (written by an older tfbert?)") from None


def check_held_out(**sizes: float) -> None:
    """InvalidTaskData unless each held-out fraction (validation_size=..., test_size=...) is
    in (0, 1) and together they leave rows to train on."""
    for name, size in sizes.items():
        if not is_number(size) or not 0 < size < 1:
            raise InvalidTaskData(f"task.{name} must be a fraction between 0 and 1, got {size!r}")
    if sum(sizes.values()) >= 1:
        given = " + ".join(f"{name} {size:g}" for name, size in sizes.items())
        raise InvalidTaskData(f"the held-out fractions leave no rows to train on: {given} = {sum(sizes.values()):g}")


def split_train_validation_test(
    dataset: datasets.Dataset, validation_size: float, test_size: float, seed: int
) -> datasets.DatasetDict:
    """A seeded train/validation/test split of one dataset, stratified for class labels."""
    check_held_out(validation_size=validation_size, test_size=test_size)
    held_out = validation_size + test_size
    first = _split(dataset, held_out, seed)
    second = _split(first["test"], test_size / held_out, seed)
    return datasets.DatasetDict(train=first["train"], validation=second["train"], test=second["test"])


def carve(dataset: datasets.Dataset, size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(rest, held_out): a seeded `size` fraction of `dataset` held out."""
    parts = _split(dataset, size, seed)
    return parts["train"], parts["test"]


def _split(dataset: datasets.Dataset, test_size: float, seed: int) -> datasets.DatasetDict:
    """dataset.train_test_split(test_size, seed, stratified by a ClassLabel `label`).

    The stratified split is datasets' own (same indices), but with the labels read at
    once: train_test_split reads them row by row, seconds on the sentiment corpus.
    """
    if not 0 < test_size < 1:
        raise InvalidTaskData(f"held-out fraction must be between 0 and 1, got {test_size}")
    if not isinstance(dataset.features["label"], datasets.ClassLabel):
        return dataset.train_test_split(test_size=test_size, seed=seed)
    held_out = math.ceil(test_size * len(dataset))
    if not 0 < held_out < len(dataset):
        raise InvalidTaskData(f"cannot hold out {test_size} of {len(dataset)} examples")
    labels = np.asarray(column(dataset, "label"))
    counts = np.bincount(labels, minlength=dataset.features["label"].num_classes)
    if alone := [name for name, count in zip(dataset.features["label"].names, counts) if count == 1]:
        raise InvalidTaskData(
            f"class {alone[0]!r} has a single example, too few to hold out a stratified {test_size:g} "
            "of the examples; every class needs at least two"
        )
    present, kept = int(np.count_nonzero(counts)), len(dataset) - held_out
    if min(held_out, kept) < present:
        raise InvalidTaskData(
            f"holding out {test_size:g} of {len(dataset)} examples keeps {kept} and holds out {held_out}, but a "
            f"stratified split puts each of the {present} classes on both sides; give more examples, or the "
            "held-out splits as files of their own"
        )
    train, test = next(stratified_shuffle_split_generate_indices(
        labels, len(dataset) - held_out, held_out, rng=np.random.default_rng(seed)
    ))
    return datasets.DatasetDict(train=dataset.select(train), test=dataset.select(test))


def limit_train_samples(splits: datasets.DatasetDict, max_train_samples: int | None):
    """Keep the first `max_train_samples` training examples (for quick runs)."""
    if max_train_samples is not None and not is_whole_number(max_train_samples, 1):
        raise InvalidTaskData(f"max_train_samples must be a whole number above 0, or null, got {max_train_samples!r}")
    if max_train_samples is None or max_train_samples >= len(splits["train"]):
        return splits
    limited = datasets.DatasetDict(splits)
    limited["train"] = splits["train"].select(range(max_train_samples))
    return limited
