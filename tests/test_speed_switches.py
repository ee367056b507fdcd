"""Speed switches: gradient accumulation, mixed precision, XLA-friendly shapes, profiling."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from tests.conftest import TINY_NO_DROPOUT, tiny_classifier
from tfbert.heads import MeanPoolingHead
from tfbert.pipeline import Pipeline, batch_stats
from tfbert.threads import cpu_cores
from tfbert.trainer import MAX_AUTO_SLICES, Trainer, resolve_parallel_slices


def seeded_classifier(seed=0):
    """The same tiny classifier, without dropout, every time: runs that differ only in a switch compare exactly."""
    tf_keras.utils.set_random_seed(seed)
    return tiny_classifier(MeanPoolingHead(num_outputs=2, dropout=0.0), TINY_NO_DROPOUT)


def batches(count, size, seed=1):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1000, 2000, size=(count * size, 12)).astype(np.int32)
    features = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    labels = rng.integers(0, 2, size=count * size).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(size)


def train_once(model, data, grad_accum_steps, parallel_slices=1):
    model.grad_accum_steps = grad_accum_steps
    model.parallel_slices = parallel_slices
    model.compile(tf_keras.optimizers.SGD(0.5), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, epochs=1, verbose=0)
    return model.get_weights(), int(model.optimizer.iterations.numpy())


@pytest.mark.parametrize("precision, tolerance", [("float32", 1e-6), ("mixed_float16", 2e-3)])
def test_gradient_accumulation_equals_the_larger_batch(precision, tolerance):
    """Also under mixed_float16, whose LossScaleOptimizer must scale the loss on the tape."""
    tf_keras.mixed_precision.set_global_policy(precision)  # reset by conftest
    initial = seeded_classifier().get_weights()
    accumulated, accumulated_steps = train_once(seeded_classifier(), batches(4, 4), grad_accum_steps=2)
    large, large_steps = train_once(seeded_classifier(), batches(2, 8), grad_accum_steps=1)
    assert accumulated_steps == large_steps == 2
    assert max(np.abs(a - b).max() for a, b in zip(large, initial)) > 10 * tolerance  # it trained
    for a, b in zip(accumulated, large):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=tolerance)


def test_gradient_accumulation_weighs_each_batch_by_its_rows():
    """Batches of 6 and 2 rows accumulate to the batch of all 8 (a mean over rows, not over batches)."""
    features, labels = next(iter(batches(1, 8)))
    uneven = tf.data.Dataset.from_tensor_slices((features, labels)).batch(6)
    accumulated, accumulated_steps = train_once(seeded_classifier(), uneven, grad_accum_steps=2)
    whole, whole_steps = train_once(seeded_classifier(), batches(1, 8), grad_accum_steps=1)
    assert accumulated_steps == whole_steps == 1
    for a, b in zip(accumulated, whole):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_last_smaller_group_of_batches_is_applied_and_the_schedule_ends(tmp_path):
    """10 batches in groups of 4: the last 2 are applied as a step of their own, so the run
    takes the 3 optimizer steps its schedule spans and the learning rate reaches 0."""
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw

    trainer = Trainer(epochs=1, grad_accum_steps=4)
    assert trainer.optimizer_steps(10) == 3
    model = seeded_classifier()
    optimizer = create_adamw(num_train_steps=3, learning_rate=1e-2, warmup_ratio=0.0)
    trainer.fit(model, optimizer, *loss_and_metrics("single_label"), batches(10, 2), 10, batches(1, 2), tmp_path)
    assert int(optimizer.iterations) == 3  # the schedule's end: its learning rate is 0 there
    assert float(model._accumulated_rows) == 0.0 and not any(np.abs(a.numpy()).max() for a in model._accumulated)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
def test_parallel_slices_train_evaluate_and_predict_like_the_whole_batch(grad_accum_steps):
    # Batches of 8 rows in 3 slices (2, 3 and 3 rows); the last batch of 2 has an empty slice.
    features, labels = next(iter(batches(1, 18)))
    data = tf.data.Dataset.from_tensor_slices((features, labels)).batch(8)
    whole, whole_steps = train_once(seeded_classifier(), data, grad_accum_steps)
    sliced_model = seeded_classifier()
    sliced, sliced_steps = train_once(sliced_model, data, grad_accum_steps, parallel_slices=3)
    assert sliced_steps == whole_steps == 3 // grad_accum_steps
    for a, b in zip(sliced, whole):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    expected = sliced_model(features, training=False)
    np.testing.assert_allclose(sliced_model.predict(data, verbose=0), expected, rtol=1e-5, atol=1e-6)
    loss = sliced_model.evaluate(features, labels, batch_size=18, verbose=0)
    np.testing.assert_allclose(loss, sliced_model.loss(labels, expected), rtol=1e-5)


def train_with_adamw(model, data, grad_accum_steps=1, parallel_slices=1, global_clipnorm=1.0):
    """`model` trained on `data` with tfbert's AdamW (create_adamw: weight decay, clipping)."""
    from tfbert.optimization import create_adamw

    model.grad_accum_steps, model.parallel_slices = grad_accum_steps, parallel_slices
    optimizer = create_adamw(num_train_steps=2, learning_rate=1e-3, warmup_ratio=0.0, global_clipnorm=global_clipnorm)
    model.compile(optimizer, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data, epochs=1, verbose=0)
    return model


@pytest.mark.parametrize("grad_accum_steps, parallel_slices, size", [(2, 1, 4), (1, 2, 8)])
def test_clipped_steps_too_train_like_the_whole_batch(grad_accum_steps, parallel_slices, size):
    """Clipping to a global norm (0.1: the tiny model's gradients are below the default 1.0)
    counts each row of an embedding's sparse gradient (a row per lookup) once, so
    accumulated or sliced batches clip as the whole batch does."""
    whole = train_with_adamw(seeded_classifier(), batches(2, 8), global_clipnorm=0.1)
    parts = train_with_adamw(seeded_classifier(), batches(16 // size, size), grad_accum_steps, parallel_slices, 0.1)
    initial = seeded_classifier().get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(whole.get_weights(), initial)) > 1e-3  # it trained
    for a, b in zip(parts.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


class UnusedWeight(tf_keras.layers.Layer):
    """Passes its input through; holds a weight the loss never reaches (as a custom head might)."""

    def build(self, input_shape):
        self.unused = self.add_weight(name="unused", shape=(3,), initializer="ones")

    def call(self, inputs):
        return inputs


def test_accumulation_leaves_a_variable_the_loss_does_not_reach_as_it_is():
    """A weight with no gradient gets no step, accumulated or not (a zero gradient would
    still decay it and move Adam's moments)."""
    from tfbert.classifier import Classifier

    inputs = tf_keras.Input((4,))
    data = tf.data.Dataset.from_tensor_slices((np.ones((8, 4), np.float32), np.arange(8) % 2)).batch(2)
    for grad_accum_steps in (1, 2):
        unused = UnusedWeight()
        model = Classifier(inputs, tf_keras.layers.Dense(2)(unused(inputs)))
        train_with_adamw(model, data, grad_accum_steps)
        np.testing.assert_array_equal(unused.unused.numpy(), np.ones(3))


def test_lazy_embeddings_with_accumulation_is_refused():
    from tfbert.checks import ConfigError
    from tfbert.optimization import create_adamw

    with pytest.raises(ConfigError, match=r"optimizer.lazy_embeddings=true .* trainer.grad_accum_steps=2 cannot tell"):
        Trainer(grad_accum_steps=2).compile(seeded_classifier(), create_adamw(num_train_steps=2, lazy_embeddings=True),
                                            tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), [])


def test_parallel_slices_auto_means_one_per_core_on_a_cpu_without_xla():
    assert resolve_parallel_slices("auto", "default", jit_compile=False) == min(cpu_cores(), MAX_AUTO_SLICES)
    assert resolve_parallel_slices("auto", "default", jit_compile=True) == 1
    assert resolve_parallel_slices("auto", "mirrored", jit_compile=False) == 1
    assert resolve_parallel_slices(3, "mirrored", jit_compile=True) == 3


@pytest.mark.parametrize("precision", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_logits_and_loss_float32(precision):
    Trainer(precision=precision)
    try:
        model = seeded_classifier()
        assert model.get_layer(index=-1).output_layer.dtype_policy.name == "float32"
        assert model.layers[3].compute_dtype == precision.split("_")[1]  # the encoder computes in 16 bits
        model.compile(tf_keras.optimizers.Adam(1e-3), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        if precision == "mixed_float16":
            assert isinstance(model.optimizer, tf_keras.mixed_precision.LossScaleOptimizer)
        history = model.fit(batches(2, 4), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
        features, _ = next(iter(batches(1, 4)))
        assert model(features).dtype == tf.float32
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_bucket_boundary_padding_bounds_the_number_of_shapes():
    import datasets

    lengths = np.random.default_rng(0).integers(3, 60, size=400)
    split = datasets.Dataset.from_dict({
        "input_ids": [[101] * int(n) for n in lengths],
        "token_type_ids": [[0] * int(n) for n in lengths],
        "label": [0] * len(lengths),
    })
    dynamic = batch_stats(Pipeline(16, [16, 32, 48])(split))
    bucketed = batch_stats(Pipeline(16, [16, 32, 48], pad_to_bucket_boundary=True)(split))
    assert bucketed["shapes"] <= 2 * 4 < dynamic["shapes"]  # full + last batch per bucket
    assert bucketed["real_tokens"] == dynamic["real_tokens"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"precision": "float8"}, "precision must be one of"),
        ({"grad_accum_steps": 0}, "grad_accum_steps must be a positive integer, got 0"),
        ({"grad_accum_steps": 1.5}, "grad_accum_steps must be a positive integer, got 1.5"),
        ({"epochs": 1.5}, "epochs must be a positive integer, got 1.5"),
        ({"backup_every_steps": 2.5}, "backup_every_steps must be a positive integer, got 2.5"),
        ({"profile_steps": [5, 2]}, r"profile_steps must be \[first, last\], integers with 0 < first <= last, got \[5, 2\]"),
        ({"profile_steps": [1.5, 3]}, r"profile_steps must be .* got \[1.5, 3\]"),
        ({"profile_steps": [5]}, r"profile_steps must be .* got \[5\]"),
        ({"parallel_slices": 0}, "parallel_slices must be a positive integer or auto, got 0"),
        ({"parallel_slices": "many"}, "parallel_slices must be a positive integer or auto, got 'many'"),
        ({"steps_per_execution": 0}, "steps_per_execution must be a positive integer, got 0"),
        ({"tensorboard_update_freq": 0}, "tensorboard_update_freq must be a positive number of batches, batch or epoch, got 0"),
        ({"tensorboard_update_freq": "often"}, "tensorboard_update_freq must be .* got 'often'"),
        ({"monitor": 5}, "monitor must name a validation metric such as val_accuracy, got 5"),
    ],
)
def test_bad_switches(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(**kwargs)


def test_optimizer_steps_follow_accumulation():
    assert Trainer(epochs=2, grad_accum_steps=4).optimizer_steps(10) == 5


def test_xla_run_with_profile_trace(snippets_file, tmp_path, monkeypatch):
    from tests.conftest import compose_config
    from tfbert.train import run

    compiled = []  # jit_compile of each model the run's Trainer compiled
    compile_model = Trainer.compile

    def recording_compile(self, model, *args, **kwargs):
        compile_model(self, model, *args, **kwargs)
        compiled.append(model.jit_compile)

    monkeypatch.setattr(Trainer, "compile", recording_compile)

    cfg = compose_config(
        "model=tiny", f"task.data_file={snippets_file}", "trainer.epochs=1", "trainer.jit_compile=true",
        "trainer.profile_steps=[2,3]", "insight.validation_insights=false", "pipeline.bucket_boundaries=[64]",
        f"run_dir={tmp_path}",
    )
    assert cfg.pipeline.pad_to_bucket_boundary is True  # follows trainer.jit_compile
    metrics = run(cfg)
    assert compiled == [True]  # the training model ran its steps through XLA
    assert metrics["train_epochs"] == 1 and set(metrics["test"]) >= {"accuracy", "f1_macro"}
    assert list((tmp_path / "tensorboard").glob("**/*.xplane.pb"))  # the profiler trace


def test_gradient_accumulation_is_refused_on_a_tpu():
    """Over replicas it is tested on CPUs (tests/test_distribute.py); a TPU is not."""
    with pytest.raises(ValueError, match="grad_accum_steps=2 works with every strategy but tpu: on a TPU, raise"):
        Trainer(grad_accum_steps=2, strategy="tpu")


@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_backups_follow_steps_not_callback_calls(steps_per_execution, tmp_path, monkeypatch):
    """Keras calls batch callbacks once per steps_per_execution steps: backups still come
    every backup_every_steps steps (here 4), not every 4 calls, and record the last step
    done (a resumed run starts after it), not the first step of the last call."""
    from tests.conftest import tiny_classifier
    from tfbert.checkpoints import Backup, backup_position
    from tfbert.objectives import loss_and_metrics
    from tfbert.optimization import create_adamw

    saved_at = []
    real_backup = Backup._backup

    def recording(self, epoch, batch=0):
        real_backup(self, epoch, batch)
        saved_at.append(backup_position(tmp_path / "backup", 16) - 1)  # the step the backup records

    monkeypatch.setattr(Backup, "_backup", recording)
    trainer = Trainer(epochs=1, backup_every_steps=4, steps_per_execution=steps_per_execution)
    trainer.fit(tiny_classifier(), create_adamw(num_train_steps=16), *loss_and_metrics("single_label"),
                batches(16, 2), 16, batches(1, 2), tmp_path)
    # before the first step (-1: none done), every 4 steps; the last step's at the epoch's end (after validation)
    assert saved_at == [-1, 3, 7, 11, 15]
