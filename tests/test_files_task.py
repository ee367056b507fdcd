"""task=files: every problem shape from local files, and every kind of bad input refused clearly."""

import json

import pandas as pd
import pytest

from tfbert.tasks import InvalidTaskData
from tfbert.tasks.files import load_files

TOPICS = {"sports": "goal match team", "politics": "vote senate law", "science": "atom cell lab"}


def write_csv(path, rows, columns=("text", "label"), sep=","):
    pd.DataFrame(rows, columns=list(columns)).to_csv(path, index=False, sep=sep)
    return path


def topic_rows(count=60):
    names = list(TOPICS)
    return [(f"{TOPICS[names[i % 3]]} {i}", names[i % 3]) for i in range(count)]


def test_three_classes_from_csv_with_carved_splits(tmp_path):
    task = load_files(str(write_csv(tmp_path / "train.csv", topic_rows(100))))
    assert task.label_names == ("politics", "science", "sports")  # sorted: a stable order
    assert {split: len(rows) for split, rows in task.splits.items()} == {"train": 80, "validation": 10, "test": 10}
    assert "carved from train" in task.provenance["validation"] and "split_seed 42" in task.provenance["test"]
    again = load_files(str(tmp_path / "train.csv"))
    assert again.splits["test"]["text"] == task.splits["test"]["text"]


def test_tsv_parquet_and_integer_labels(tmp_path):
    rows = [(text, i % 2) for i, (text, _) in enumerate(topic_rows(40))]
    train = write_csv(tmp_path / "train.tsv", rows, sep="\t")
    test = tmp_path / "test.parquet"
    pd.DataFrame(rows[:10], columns=["text", "label"]).to_parquet(test)
    task = load_files(str(train), test_file=str(test))
    assert task.label_names == ("0", "1") and len(task.splits["test"]) == 10
    assert task.provenance["test"].startswith(str(test))


def test_a_tsv_is_plain_tab_separated_lines(tmp_path):
    """No CSV quoting in a TSV (IANA's format, GLUE's files): a `"` is text, never the start
    of a field that takes in the lines after it."""
    lines = ['"Great" but long', '"an unbalanced quote opens here', "plain", 'it closes here"'] * 10
    path = tmp_path / "quotes.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{line}\t{i % 2}\n" for i, line in enumerate(lines)))
    task = load_files(str(path))
    texts = [text for split in task.splits.values() for text in split["text"]]
    assert sorted(texts) == sorted(lines)


def test_spaces_around_a_class_name_do_not_make_another_class(tmp_path):
    rows = [(text, [" pos", "pos ", "neg", "neg\t"][i % 4]) for i, (text, _) in enumerate(topic_rows(40))]
    task = load_files(str(write_csv(tmp_path / "train.csv", rows)))
    assert task.label_names == ("neg", "pos")


def test_a_line_that_is_not_json_is_named(tmp_path):
    lines = [json.dumps({"text": f"t{i}", "label": i % 2}) for i in range(20)]
    lines[12] = '{"text": "cut off", "label": '
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidTaskData, match=rf"^{path}, line 13: not JSON \(Expecting value"):
        load_files(str(path))


def test_sentence_pairs_with_custom_columns(tmp_path):
    rows = [{"premise": f"a {t}", "hypothesis": f"b {t}", "gold": "yes" if i % 2 else "no"}
            for i, (t, _) in enumerate(topic_rows(30))]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(map(json.dumps, rows)))
    task = load_files(str(path), text_column="premise", text_pair_column="hypothesis", label_column="gold")
    assert task.has_pairs and task.splits["train"].column_names == ["text", "text_pair", "label"]


def test_multi_label_from_lists_and_strings(tmp_path):
    lists = tmp_path / "multi.jsonl"
    lists.write_text("\n".join(json.dumps({"text": f"t{i}", "tags": ["a", "b"][: i % 3]}) for i in range(30)))
    task = load_files(str(lists), label_column="tags", problem_type="multi_label")
    assert task.label_names == ("a", "b")
    assert sorted(map(tuple, task.splits["train"]["label"])) [0] == (0.0, 0.0)  # no labels is a valid row
    strings = write_csv(tmp_path / "multi.csv", [(f"t{i}", ["a", "a,b", "b"][i % 3]) for i in range(30)])
    task = load_files(str(strings), problem_type="multi_label")
    assert task.label_names == ("a", "b")
    expected = {"a": (1.0, 0.0), "a,b": (1.0, 1.0), "b": (0.0, 1.0)}
    for split in task.splits.values():
        for text, label in zip(split["text"], split["label"]):
            assert tuple(label) == expected[["a", "a,b", "b"][int(text[1:]) % 3]], text


def test_an_empty_multi_label_separator_is_named(tmp_path):
    strings = write_csv(tmp_path / "multi.csv", [(f"t{i}", ["a", "a,b", "b"][i % 3]) for i in range(30)])
    with pytest.raises(InvalidTaskData, match="label_separator must not be empty for a multi_label task"):
        load_files(str(strings), problem_type="multi_label", label_separator="")


def test_regression_targets(tmp_path):
    path = write_csv(tmp_path / "scores.csv", [(f"t{i}", i / 10) for i in range(30)])
    task = load_files(str(path), problem_type="regression")
    assert task.label_names == ("label",) and task.num_outputs == 1
    assert isinstance(task.splits["train"]["label"][0], float)


def test_balanced_class_weights(tmp_path):
    rows = [(f"t{i}", "rare" if i % 4 == 0 else "common") for i in range(80)]
    task = load_files(str(write_csv(tmp_path / "train.csv", rows)), class_weight="balanced")
    weights = task.class_weights()
    # Stratified 80% of 20 rare and 60 common rows: 16 and 48 of 64; weight = 64 / (2 classes x count).
    assert list(task.splits["train"]["label"]).count(task.label_names.index("rare")) == 16
    assert weights[task.label_names.index("rare")] == pytest.approx(64 / (2 * 16))
    assert weights[task.label_names.index("common")] == pytest.approx(64 / (2 * 48))


# ---- bad input: each stops with the file, the row and the value ----

def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.csv does not exist"):
        load_files(str(tmp_path / "nope.csv"))


def test_missing_column_lists_the_columns_found(tmp_path):
    path = write_csv(tmp_path / "train.csv", topic_rows(), columns=("sentence", "label"))
    with pytest.raises(InvalidTaskData, match=r"no column 'text'; columns found: sentence, label"):
        load_files(str(path))


@pytest.mark.parametrize("content", ["", "text,label\n"], ids=["empty", "header_only"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(InvalidTaskData, match="train.csv (is empty|has a header but no rows)"):
        load_files(str(path))


def test_empty_text_and_missing_label_refused_or_dropped(tmp_path):
    rows = topic_rows(40)
    rows[6] = ("   ", "sports")
    rows[9] = ("some text", None)
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(InvalidTaskData, match=r"train.csv \(train\), row 7: empty text in column 'text'.*on_invalid=drop"):
        load_files(str(path))
    task = load_files(str(path), on_invalid="drop")
    assert sum(map(len, task.splits.values())) == 38


def test_unknown_label_in_test(tmp_path):
    train = write_csv(tmp_path / "train.csv", topic_rows(30))
    test = write_csv(tmp_path / "test.csv", [("x", "sports"), ("y", "cooking")])
    with pytest.raises(InvalidTaskData, match=r"test.csv \(test\), row 2: label 'cooking': .*not among the training labels"):
        load_files(str(train), test_file=str(test))
    with pytest.raises(InvalidTaskData, match=r"train.csv \(train\), row \d+: label 'politics': .*not among task.label_names"):
        load_files(str(train), label_names=["science", "sports"])  # the configured names, not the training labels


def test_single_class_in_train(tmp_path):
    train = write_csv(tmp_path / "train.csv", [(f"t{i}", "sports") for i in range(10)])
    test = write_csv(tmp_path / "test.csv", topic_rows(6))
    with pytest.raises(InvalidTaskData, match=r"train.csv \(train\): every row has the class 'sports'"):
        load_files(str(train), validation_file=str(test), test_file=str(test))


def test_non_utf8_bytes(tmp_path):
    path = tmp_path / "train.csv"
    path.write_bytes(b"text,label\ngood,pos\ncaf\xe9 au lait,neg\n")
    with pytest.raises(InvalidTaskData, match=r"train.csv, line 3: bytes b'\\xe9' are not UTF-8"):
        load_files(str(path))


def test_float_label_for_classification(tmp_path):
    path = write_csv(tmp_path / "train.csv", [(f"t{i}", 0.5 + i) for i in range(10)])
    with pytest.raises(InvalidTaskData, match=r"row 1: label 0.5: .*use task.problem_type=regression"):
        load_files(str(path))


def test_nan_regression_target(tmp_path):
    rows = [(f"t{i}", float(i)) for i in range(20)]
    rows[4] = ("t4", float("nan"))
    path = write_csv(tmp_path / "train.csv", rows)
    with pytest.raises(InvalidTaskData, match="row 5: missing label"):
        load_files(str(path), problem_type="regression")


def test_unknown_format(tmp_path):
    path = tmp_path / "train.xlsx"
    path.write_text("x")
    with pytest.raises(InvalidTaskData, match=r"unknown format '.xlsx'; use one of .csv, .tsv"):
        load_files(str(path))


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"validation_size": 1.5}, "task.validation_size must be a fraction between 0 and 1, got 1.5"),
        ({"test_size": 0}, "task.test_size must be a fraction between 0 and 1, got 0"),
        (
            {"validation_size": 0.5, "test_size": 0.5},
            "leave no rows to train on: test_size 0.5 \\+ validation_size 0.5 = 1",
        ),
    ],
)
def test_bad_held_out_fractions_are_named(tmp_path, sizes, message):
    with pytest.raises(InvalidTaskData, match=message):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), **sizes)


@pytest.mark.parametrize("max_train_samples", [0, 2.5, 10_000.5])
def test_a_bad_max_train_samples_is_named(tmp_path, max_train_samples):
    with pytest.raises(InvalidTaskData, match=f"max_train_samples must be a whole number above 0, or null, got {max_train_samples}"):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), max_train_samples=max_train_samples)


@pytest.mark.parametrize("max_length", [2, 2.5])
def test_a_bad_max_length_is_named(tmp_path, max_length):
    with pytest.raises(InvalidTaskData, match=f"max_length must be a whole number, at least 3 .*got {max_length}"):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), max_length=max_length)


@pytest.mark.parametrize("split_seed", [-1, 2.5, "x"])
def test_a_bad_split_seed_is_named(tmp_path, split_seed):
    with pytest.raises(ValueError, match=f"split_seed must be a whole number from 0 to 4294967295, got {split_seed!r}"):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), split_seed=split_seed)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"threshold": "high", "problem_type": "multi_label"}, "threshold must be between 0 and 1, got high"),
        ({"class_weight": [1, "a", 2]}, r"class_weight must be `balanced` or 3 positive weights.*got \[1, 'a', 2\]"),
        ({"class_weight": "abc"}, "class_weight must be `balanced` or 3 positive weights.*got 'abc'"),
        ({"class_weight": [1, 0, 2]}, "class_weight must be `balanced` or 3 positive weights"),
    ],
    ids=["threshold_not_a_number", "weight_not_a_number", "weights_a_string", "weight_zero"],
)
def test_bad_threshold_or_class_weight_is_named(tmp_path, options, message):
    with pytest.raises(InvalidTaskData, match=message):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), **options)


def test_held_out_fractions_of_given_splits_are_not_used(tmp_path):
    train = write_csv(tmp_path / "train.csv", topic_rows())
    test = write_csv(tmp_path / "test.csv", topic_rows(12))
    task = load_files(str(train), test_file=str(test), test_size=2.0, validation_size=0.5)
    assert len(task.splits["test"]) == 12 and len(task.splits["validation"]) == 30


def test_stratified_split_is_datasets_own_split():
    """carve() reads the labels at once, but holds out exactly what datasets' train_test_split would."""
    import datasets

    from tfbert.tasks.task_data import carve

    features = datasets.Features(text=datasets.Value("string"), label=datasets.ClassLabel(names=["a", "b", "c"]))
    labels = [i % 3 for i in range(50)] + [0] * 10
    data = datasets.Dataset.from_dict({"text": [str(i) for i in range(60)], "label": labels}, features=features)
    rest, held_out = carve(data, 0.2, seed=7)
    expected = data.train_test_split(test_size=0.2, seed=7, stratify_by_column="label")
    assert held_out["text"][:] == expected["test"]["text"][:] and rest["text"][:] == expected["train"]["text"][:]
    alone = datasets.Dataset.from_dict({"text": ["x"] * 5, "label": [0, 0, 1, 1, 2]}, features=features)
    with pytest.raises(InvalidTaskData, match="class 'c' has a single example"):
        carve(alone, 0.4, seed=7)
    with pytest.raises(InvalidTaskData, match="holding out 0.1 of 6 examples keeps 5 and holds out 1, but .* each of the 3 classes"):
        carve(alone.add_item({"text": "y", "label": 2}), 0.1, seed=7)


def test_a_misspelt_problem_type_is_named_before_the_labels_are_read(tmp_path):
    with pytest.raises(InvalidTaskData, match=r"problem_type must be one of \['single_label', 'multi_label', 'regression'\], got 'regresion'"):
        load_files(str(write_csv(tmp_path / "train.csv", topic_rows())), problem_type="regresion")


def test_multi_label_cells_read_as_numbers_are_class_names(tmp_path):
    """A validation file whose cells each hold one tag reads as integers, a train file with
    `1,3` cells as strings: `1` is the class `1` in both."""
    train = write_csv(tmp_path / "train.csv", [(f"text {i}", ["1", "2", "1,3", "2,3"][i % 4]) for i in range(40)])
    validation = write_csv(tmp_path / "validation.csv", [(f"held {i}", [1, 2, 3][i % 3]) for i in range(9)])
    task = load_files(str(train), validation_file=str(validation), problem_type="multi_label")
    assert task.label_names == ("1", "2", "3")
    assert [tuple(label) for label in task.splits["validation"]["label"][:3]] == [(1, 0, 0), (0, 1, 0), (0, 0, 1)]


def test_words_pandas_takes_for_missing_are_texts_and_classes(tmp_path):
    """Only an empty cell is missing in a CSV or TSV: `NA`, `None`, `null`, `nan` are text (as
    tfbert.predict reads them) and class names."""
    words = ["NA", "None", "null", "nan", "N/A"]
    rows = [(words[i % 5] if i % 2 else f"text {i}", ["None", "spam", "NA"][i % 3]) for i in range(60)]
    for suffix, sep in ((".csv", ","), (".tsv", "\t")):
        task = load_files(str(write_csv(tmp_path / f"train{suffix}", rows, sep=sep)))
        assert task.label_names == ("NA", "None", "spam")
        assert sorted(text for split in task.splits.values() for text in split["text"]) == sorted(text for text, _ in rows)


def test_an_empty_multi_label_cell_is_a_row_without_labels(tmp_path):
    rows = [(f"news {i}", ["", "sports", "tech", "sports,tech"][i % 4]) for i in range(40)]
    task = load_files(str(write_csv(tmp_path / "tags.csv", rows)), problem_type="multi_label")
    assert sum(map(len, task.splits.values())) == 40
    assert sum(1 for split in task.splits.values() for label in split["label"] if not any(label)) == 10


def test_a_label_error_after_dropped_rows_names_the_files_row(tmp_path):
    rows = [("" if i in (1, 2) else f"t {i}", 0.5 if i == 5 else i % 2) for i in range(40)]
    with pytest.raises(InvalidTaskData, match=r"train.csv \(train\), row 6: label 0.5"):
        load_files(str(write_csv(tmp_path / "train.csv", rows)), on_invalid="drop")


def test_a_class_held_out_but_not_trained_on_is_refused(tmp_path, caplog):
    """max_train_samples keeps the first rows of train: where they lack a class the held-out
    splits score, the run is refused; a class of label_names no split holds is a warning."""
    ordered = write_csv(tmp_path / "train.csv", [(f"{name} {i}", name) for name in ("neg", "neu", "pos") for i in range(30)])
    held_out = write_csv(tmp_path / "held_out.csv", [(f"{name} held {i}", name) for name in ("neg", "neu", "pos") for i in range(3)])
    splits = {"validation_file": str(held_out), "test_file": str(held_out)}
    with pytest.raises(InvalidTaskData, match=r"the validation split holds class\(es\) \['pos'\] that no training example has \(50 training rows"):
        load_files(str(ordered), max_train_samples=50, **splits)
    task = load_files(str(ordered), label_names=["neg", "neu", "pos", "other"], **splits)
    assert task.num_outputs == 4 and "no training example of class(es) ['other']" in caplog.text


def test_an_empty_parquet_file_is_named(tmp_path):
    path = tmp_path / "train.parquet"
    pd.DataFrame({"text": pd.Series([], dtype=str), "label": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(InvalidTaskData, match=r"train.parquet has no rows$"):
        load_files(str(path))
