"""Raw labelled tables (from files or the hub) -> TaskData, refusing bad rows clearly.

Every check runs before any training: columns that exist, rows with text and a label,
labels of the right kind for the problem type, validation/test labels known from train.
Errors name the source (file or hub split), the 1-based row and the value.
"""

import logging
import math
from numbers import Integral, Real

import datasets
import numpy as np

from tfbert.checks import check_seed
from tfbert.tasks.task_data import (
    SPLITS,
    PROBLEM_TYPES,
    InvalidTaskData,
    TaskData,
    carve,
    check_held_out,
    column,
    limit_train_samples,
)

log = logging.getLogger(__name__)
ON_INVALID = ("error", "drop")


def build_task(
    name: str,
    raw: dict[str, datasets.Dataset],
    sources: dict[str, str],
    text_column: str = "text",
    text_pair_column: str | None = None,
    label_column: str = "label",
    problem_type: str = "single_label",
    label_names: list[str] | None = None,
    label_separator: str = ",",
    on_invalid: str = "error",
    validation_size: float = 0.1,
    test_size: float = 0.1,
    split_seed: int = 42,
    max_train_samples: int | None = None,
    max_length: int = 128,
    threshold: float = 0.5,
    class_weight: str | list | None = None,
) -> TaskData:
    """Normalise `raw` splits (train required; validation/test carved from train if absent).

    Args:
        sources: per split, where it came from (used in error messages).
        label_names: class order for single/multi-label; default: sorted train labels.
        label_separator: splits a multi-label string cell such as `sports,politics`.
        on_invalid: `error` stops at the first row with empty text or a missing label;
            `drop` removes such rows and logs how many.
    """
    if not name or "/" in name or name.startswith("."):
        raise InvalidTaskData(f"a task's name names its export directory: a plain directory name, got {name!r}")
    check_seed(split_seed=split_seed)
    if on_invalid not in ON_INVALID:
        raise InvalidTaskData(f"on_invalid must be one of {list(ON_INVALID)}, got {on_invalid!r}")
    if problem_type not in PROBLEM_TYPES:  # before the labels are read the way it says
        raise InvalidTaskData(f"problem_type must be one of {list(PROBLEM_TYPES)}, got {problem_type!r}")
    if problem_type == "multi_label" and not label_separator:
        raise InvalidTaskData("label_separator must not be empty for a multi_label task (e.g. `,` for `sports,politics`)")
    if "train" not in raw:
        raise InvalidTaskData(f"task {name!r} needs a train split; got {sorted(raw)}")
    columns = {"text": text_column, "text_pair": text_pair_column, "label": label_column}
    columns = {ours: theirs for ours, theirs in columns.items() if theirs}
    table = {}
    for split, dataset in raw.items():
        missing = [column for column in columns.values() if column not in dataset.column_names]
        if missing:
            raise InvalidTaskData(
                f"{sources[split]}: no column {', '.join(map(repr, missing))}; "
                f"columns found: {', '.join(dataset.column_names)}"
            )
        table[split] = _valid_rows(dataset, columns, sources[split], problem_type, on_invalid)

    encode = _label_encoder(problem_type, table["train"], label_names, label_separator,
                            raw["train"].features[label_column], label_column, sources["train"])
    features = datasets.Features(
        text=datasets.Value("string"),
        **({"text_pair": datasets.Value("string")} if text_pair_column else {}),
        label=encode.feature,
    )
    splits = {}
    for split in sorted(table, key=lambda name: name != "train"):  # train first: its checks come first
        rows = table[split]
        labels = [encode(value, sources[split], row) for value, row in zip(rows["label"], rows["row"])]
        splits[split] = datasets.Dataset.from_dict(
            {**{key: rows[key] for key in columns if key != "label"}, "label": labels}, features=features
        )
        if split == "train" and problem_type == "single_label" and len(set(labels)) < 2:
            raise InvalidTaskData(
                f"{sources['train']}: every row has the class {encode.names[labels[0]]!r}; "
                "a classifier needs at least two classes in train"
            )

    provenance = {split: sources[split] for split in splits}
    carved = (("test", test_size), ("validation", validation_size))
    check_held_out(**{f"{split}_size": size for split, size in carved if split not in splits})
    remaining = 1.0  # fraction of the original train split still in splits["train"]
    for split, size in carved:
        if split not in splits:
            splits["train"], splits[split] = carve(splits["train"], size / remaining, split_seed)
            remaining -= size
            provenance[split] = f"carved from train: {size:.0%} of its rows, split_seed {split_seed}"
            log.info("task %s: no %s split given; %s", name, split, provenance[split])
    return TaskData(
        name=name,
        splits=limit_train_samples(datasets.DatasetDict({split: splits[split] for split in SPLITS}), max_train_samples),
        label_names=encode.names,
        max_length=max_length,
        problem_type=problem_type,
        threshold=threshold,
        class_weight=class_weight,
        provenance=provenance,
    )


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip()
    )


def _valid_rows(dataset, columns, source, problem_type, on_invalid) -> dict[str, list]:
    """Column lists with our names plus `row` (1-based), invalid rows dropped or refused."""
    values = {ours: column(dataset, theirs) for ours, theirs in columns.items()}
    kept = {key: [] for key in [*values, "row"]}
    dropped = 0
    for index in range(len(dataset)):
        row = {key: values[key][index] for key in values}
        bad = next((key for key in row if _missing(row[key])), None)
        if bad == "label" and problem_type == "multi_label":
            bad = None  # an empty label cell (None in a CSV, "" in JSON) is a row with no labels, which is valid
        if bad:
            if on_invalid == "error":
                raise InvalidTaskData(
                    f"{source}, row {index + 1}: {'empty text' if bad != 'label' else 'missing label'} "
                    f"in column {columns[bad]!r} (value {row[bad]!r}); fix the row or set task.on_invalid=drop"
                )
            dropped += 1
            continue
        for key, value in row.items():
            kept[key].append(value)
        kept["row"].append(index + 1)
    if dropped:
        log.warning("%s: dropped %d of %d rows with empty text or a missing label", source, dropped, len(dataset))
    if not kept["row"]:
        raise InvalidTaskData(f"{source} has no usable rows ({len(dataset)} rows read)")
    return kept


class _LabelEncoder:
    """Maps raw label cells to the stored label for one problem type."""

    def __init__(self, names, feature, convert):
        self.names = tuple(names)
        self.feature = feature
        self._convert = convert

    def __call__(self, value, source, row):
        try:
            return self._convert(value)
        except (ValueError, TypeError) as error:
            raise InvalidTaskData(f"{source}, row {row}: label {value!r}: {error}") from None


def _class_name(value, feature) -> str:
    """A single-label cell as a class name; floats only where they are whole numbers."""
    if isinstance(feature, datasets.ClassLabel) and isinstance(value, Integral):
        if not 0 <= value < feature.num_classes:
            raise ValueError(f"not a class id of {feature.names}")
        return feature.names[value]
    if isinstance(value, bool) or isinstance(value, (str, Integral)):
        return str(value)
    if isinstance(value, Real) and float(value).is_integer():
        return str(int(value))  # e.g. pandas reads 0/1 with a gap as 0.0/1.0
    raise ValueError(
        "classification labels must be strings or integers; for a numeric target use "
        "task.problem_type=regression"
    )


def _label_encoder(problem_type, train, label_names, separator, feature, column, train_source="train") -> _LabelEncoder:
    """The encoder of `problem_type`'s labels; its class names from `label_names`, else from the
    labels of `train` (_valid_rows' columns: `label` and each one's file `row`)."""
    if problem_type == "regression":
        def to_float(value):
            number = float(value)
            if not math.isfinite(number):
                raise ValueError("regression targets must be finite numbers")
            return number

        return _LabelEncoder([column], datasets.Value("float32"), to_float)

    def cell_names(value):
        if problem_type == "single_label":  # a class name is trimmed of spaces, as each multi-label one is
            return [_class_name(value.strip() if isinstance(value, str) else value, feature)]
        if _missing(value):
            return []  # a row with no labels
        if isinstance(value, Real) and not isinstance(value, bool):
            value = [value]  # a cell `3` the reader took for a number: the one class `3`
        if not isinstance(value, (str, list, tuple, np.ndarray)):
            raise ValueError(f"multi-label labels must be lists or {separator!r}-separated strings")
        items = value.split(separator) if isinstance(value, str) else list(value)
        inner = feature.feature if isinstance(feature, datasets.Sequence) else feature
        return [_class_name(item.strip() if isinstance(item, str) else item, inner) for item in items if str(item).strip()]

    named_by = "task.label_names" if label_names is not None else "the training labels"
    if label_names is None:
        seen = set()
        for row, value in zip(train["row"], train["label"]):
            try:
                seen.update(cell_names(value))
            except ValueError as error:
                raise InvalidTaskData(f"{train_source}, row {row}: label {value!r}: {error}") from None
        if isinstance(feature, datasets.ClassLabel):
            label_names = feature.names
        else:
            numeric = all(name.lstrip("-").isdigit() for name in seen)
            label_names = sorted(seen, key=int if numeric else str)
    index = {str(name): position for position, name in enumerate(label_names)}

    def lookup(name):
        if name not in index:
            raise ValueError(f"class {name!r} is not among {named_by} {list(index)}")
        return index[name]

    if problem_type == "single_label":
        return _LabelEncoder(
            [str(name) for name in label_names],
            datasets.ClassLabel(names=[str(name) for name in label_names]),
            lambda value: lookup(cell_names(value)[0]),
        )

    def multi_hot(value):
        vector = np.zeros(len(index), np.float32)
        for name in cell_names(value):
            vector[lookup(name)] = 1.0
        return vector.tolist()

    return _LabelEncoder(
        [str(name) for name in label_names], datasets.Sequence(datasets.Value("float32")), multi_hot
    )
