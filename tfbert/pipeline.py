"""Tokenized splits -> tf.data: length buckets, dynamic padding, shuffling, prefetch.

Examples of similar length are batched together and each batch is padded only to
its own longest example (or, with `pad_to_bucket_boundary`, for XLA, to its bucket's
boundary), never to max_length, so little compute goes to padding.
"""

import datasets
import numpy as np
import tensorflow as tf

from tfbert.checks import check_flags, check_seed, is_whole_number
from tfbert.tasks.task_data import column


class Pipeline:
    """Builds the batched tf.data.Dataset of one split.

    Args:
        batch_size: examples per batch (the global batch under a distribution strategy).
        bucket_boundaries: sequence lengths that separate the buckets; examples of
            length < boundary[i] share bucket i, longer ones the last bucket.
        seed: shuffling seed (reshuffled each epoch from it).
        pad_to_bucket_boundary: pad each batch to its bucket's upper boundary instead of
            its longest example: a little more padding, but few distinct shapes, so XLA
            (trainer.jit_compile) compiles a handful of programs instead of one per length.
    """

    def __init__(
        self,
        batch_size: int = 32,
        bucket_boundaries=(16, 24, 32, 48, 64, 96),
        seed: int = 0,
        pad_to_bucket_boundary: bool = False,
    ):
        if not is_whole_number(batch_size, 1):
            raise ValueError(f"batch_size must be a whole number above 0, got {batch_size!r}")
        boundaries = list(bucket_boundaries)  # a Hydra ListConfig too
        if not all(is_whole_number(boundary, 1) for boundary in boundaries) or boundaries != sorted(set(boundaries)):
            raise ValueError(f"bucket_boundaries must be increasing whole numbers above 0, got {boundaries}")
        check_seed(seed=seed)
        check_flags(pad_to_bucket_boundary=pad_to_bucket_boundary)
        self.batch_size = batch_size
        self.bucket_boundaries = boundaries
        self.seed = seed
        self.pad_to_bucket_boundary = pad_to_bucket_boundary

    def __call__(self, split: datasets.Dataset, training: bool = False) -> tf.data.Dataset:
        """(features dict of int32 (batch, seq), labels) batches.

        Labels are int32 class ids (batch,), or float32 targets (batch,) / multi-hot
        vectors (batch, classes).

        `training` shuffles every epoch; evaluation keeps a fixed order.
        """
        token_rows = {name: column(split, name) for name in ("input_ids", "token_type_ids")}
        lengths = np.fromiter(map(len, token_rows["input_ids"]), dtype=np.int64, count=len(split))
        columns = {
            name: tf.RaggedTensor.from_row_lengths(np.concatenate(rows).astype(np.int32), lengths)
            for name, rows in token_rows.items()
        }
        labels = np.asarray(column(split, "label"))  # (n,) class ids, (n,) floats or (n, classes) multi-hot
        labels = labels.astype(np.int32 if labels.dtype.kind in "iu" else np.float32)
        examples = tf.data.Dataset.from_tensor_slices((columns, labels)).map(
            _add_attention_mask, num_parallel_calls=tf.data.AUTOTUNE
        )
        return self.batch(examples, lengths, training)

    def batch(self, examples: tf.data.Dataset, lengths: np.ndarray, training: bool = False) -> tf.data.Dataset:
        """Shuffle (in training), bucket by length and pad the examples into batches.

        Each example is (features, label) whose features hold `attention_mask` (seq,);
        every feature is padded with zeros along each dimension to the batch's longest.
        `lengths` are the examples' lengths, in order: they give the number of batches,
        which the dataset declares (Keras needs it to run several steps per call).
        """
        if training:
            examples = examples.shuffle(len(lengths), seed=self.seed, reshuffle_each_iteration=True)
        boundaries = self.bucket_boundaries
        longest = int(lengths.max(initial=0))
        if self.pad_to_bucket_boundary and longest >= boundaries[-1]:
            boundaries = boundaries + [longest + 1]  # the last bucket needs a bound too
        dataset = examples.bucket_by_sequence_length(
            element_length_func=lambda features, label: tf.shape(features["attention_mask"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[self.batch_size] * (len(boundaries) + 1),
            pad_to_bucket_boundary=self.pad_to_bucket_boundary,
        )
        # A bucket takes the lengths from its lower boundary up to (not including) its upper one,
        # and yields its examples in full batches and, at the end, one partial batch.
        per_bucket = np.bincount(np.searchsorted(boundaries, lengths, side="right"), minlength=len(boundaries) + 1)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(int(np.ceil(per_bucket / self.batch_size).sum())))
        options = tf.data.Options()
        # Under a multi-worker strategy each worker takes its share of every global batch
        # (the examples are in memory, so there are no files to shard by).
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        # No autotuning: the examples are in memory, so there is nothing worth tuning, and in
        # TensorFlow 2.21 a finished iterator waits for its autotuning thread's next wake-up
        # (which backs off to once a minute): up to 60 s after training, seconds after each
        # evaluation. Without it, AUTOTUNE means one thread per core and a small prefetch buffer.
        options.autotune.enabled = False
        return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def stream_epochs(epoch_data: tf.data.Dataset, epochs: int, skip_batches: int = 0) -> tf.data.Dataset:
    """`epochs` passes over a training dataset as one stream of batches.

    Each pass is reshuffled, deterministically from the pipeline's seed, so the stream
    is the same in every process: resuming at batch k of it (`skip_batches`) sees
    exactly the batches an uninterrupted run would see from there on.
    """
    stream = tf.data.Dataset.range(epochs).flat_map(lambda _: epoch_data)
    # flat_map drops the options of epoch_data (e.g. its sharding policy): keep them.
    return stream.skip(skip_batches).with_options(epoch_data.options()).prefetch(tf.data.AUTOTUNE)


def _add_attention_mask(features, label):
    features = {
        "input_ids": features["input_ids"],
        "attention_mask": tf.ones_like(features["input_ids"]),
        "token_type_ids": features["token_type_ids"],
    }
    return features, label


def batch_stats(dataset: tf.data.Dataset) -> dict:
    """Batches, examples and real vs padded tokens over one pass of a batched dataset."""
    batches = examples = real = padded = 0
    shapes = set()
    for features, _ in dataset:
        mask = features["attention_mask"]
        shapes.add(tuple(mask.shape))
        batches += 1
        examples += int(tf.shape(mask)[0])
        real += int(tf.reduce_sum(mask))
        padded += int(tf.size(mask))
    return {
        "batches": batches,
        "examples": examples,
        "real_tokens": real,
        "padded_tokens": padded,
        "shapes": len(shapes),  # distinct (batch, seq) shapes: XLA compiles one program each
        "padding_efficiency": real / padded if padded else 0.0,
    }
