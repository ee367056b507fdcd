import datasets
import numpy as np
import pytest

from tfbert.pipeline import Pipeline, batch_stats, stream_epochs


def token_split(lengths):
    """Examples whose ids encode their index, so order and alignment can be checked."""
    ids = [[101] + [1000 + i] * (n - 2) + [102] for i, n in enumerate(lengths)]
    return datasets.Dataset.from_dict(
        {"input_ids": ids, "token_type_ids": [[0] * n for n in lengths], "label": [i % 2 for i in range(len(lengths))]}
    )


LENGTHS = np.random.default_rng(0).integers(3, 90, size=300).tolist()


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_every_example_once_padded_to_its_batch(training):
    pipeline = Pipeline(batch_size=16, bucket_boundaries=[16, 32, 64])
    seen = []
    for features, labels in pipeline(token_split(LENGTHS), training=training):
        ids, mask = features["input_ids"].numpy(), features["attention_mask"].numpy()
        real = mask.sum(axis=1)
        assert ids.shape[1] == real.max()  # dynamic padding: no wider than its longest example
        assert (ids[mask == 0] == 0).all() and features["token_type_ids"].shape == ids.shape
        for row, length, label in zip(ids, real, labels.numpy()):
            index = row[1] - 1000
            assert LENGTHS[index] == length and label == index % 2
            seen.append(index)
    assert sorted(seen) == list(range(len(LENGTHS)))


@pytest.mark.parametrize("pad_to_bucket_boundary", [False, True])
@pytest.mark.parametrize("lengths", [LENGTHS, [16] * 17 + [3, 15, 64, 63, 200]], ids=["random", "at_boundaries"])
def test_the_dataset_declares_its_number_of_batches(lengths, pad_to_bucket_boundary):
    """Keras needs it to run several steps per call (steps_per_execution) over an evaluation split."""
    dataset = Pipeline(batch_size=8, bucket_boundaries=[16, 32, 64], pad_to_bucket_boundary=pad_to_bucket_boundary)(
        token_split(lengths), training=True
    )
    assert dataset.cardinality().numpy() == sum(1 for _ in dataset)  # assert_cardinality also fails on a wrong count


def test_bucketing_beats_padding_each_batch_to_its_longest():
    def stats(boundaries):
        return batch_stats(Pipeline(batch_size=16, bucket_boundaries=boundaries)(token_split(LENGTHS), training=True))

    bucketed, one_bucket = stats([16, 32, 64]), stats([])
    for counted in (bucketed, one_bucket):
        assert counted["examples"] == len(LENGTHS) and counted["real_tokens"] == sum(LENGTHS)
    # Lengths uniform in 3..89: a batch of 16 drawn from all of them pads to about 85 (0.57 here);
    # the top bucket's (64..89) pads to about 88 for 77 real tokens.
    assert one_bucket["padding_efficiency"] < 0.65 and bucketed["padding_efficiency"] > 0.8


def test_training_order_changes_each_epoch_but_not_evaluation():
    def first_ids(dataset):
        return [features["input_ids"].numpy()[0, 1] for features, _ in dataset.take(5)]

    train = Pipeline(batch_size=8, seed=3)(token_split(LENGTHS), training=True)
    assert first_ids(train) != first_ids(train)
    evaluation = Pipeline(batch_size=8)(token_split(LENGTHS))
    assert first_ids(evaluation) == first_ids(evaluation)


def test_no_autotuning_so_finished_iterators_free_at_once():
    # TensorFlow 2.21 holds a finished iterator until its autotuning thread wakes (up to 60 s).
    train = Pipeline(batch_size=8)(token_split(LENGTHS), training=True)
    evaluation = Pipeline(batch_size=8)(token_split(LENGTHS))
    for dataset in (train, evaluation, stream_epochs(train, epochs=2)):
        assert dataset.options().autotune.enabled is False


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"batch_size": 0}, "batch_size must be a whole number above 0, got 0"),
        ({"batch_size": 2.5}, "batch_size must be a whole number above 0, got 2.5"),
        ({"bucket_boundaries": [32, 16]}, r"must be increasing whole numbers above 0, got \[32, 16\]"),
        ({"bucket_boundaries": [16, 24.5]}, r"must be increasing whole numbers above 0, got \[16, 24.5\]"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Pipeline(**kwargs)
