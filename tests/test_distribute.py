"""tf.distribute on one CPU machine: strategies by name, 2 replicas, 2 workers over loopback, bad input."""

import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import datasets
import pytest
import tensorflow as tf

from tests.conftest import NO_DROPOUT_OVERRIDES, ROOT, compose_config, scalars
from tfbert.checks import ConfigError, config_group
from tfbert.distribute import build_strategy, check_global_batch, is_chief, worker_dir
from tfbert.pipeline import Pipeline, stream_epochs
from tfbert.train import run

LAUNCHER = ROOT / "scripts" / "launch_local_workers.py"
# A run whose loss does not depend on how a global batch is split: no dropout, and one
# length bucket over 32 training examples, so every batch of 8 is full (4 steps an epoch).
COMPARABLE_RUN = (
    "model=tiny", "head=mean", "task.max_train_samples=32", "pipeline.batch_size=8",
    "pipeline.bucket_boundaries=[1000]", "trainer.epochs=2", "optimizer.learning_rate=1e-3", *NO_DROPOUT_OVERRIDES,
    "insight.validation_insights=false", "insight.hparams_dashboard=false",
)
# What a fresh process runs first to have two logical CPU devices (possible only before TensorFlow starts).
TWO_CPUS = """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
"""
# Then a run.
TWO_CPU_RUN = """
import sys
from tests.conftest import compose_config
from tfbert.distribute import build_strategy
from tfbert.train import run
run(compose_config(*sys.argv[1:]))
print("replicas", build_strategy("mirrored").num_replicas_in_sync)
"""
EXAMPLE_TF_CONFIG = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, "task": {"type": "worker", "index": 0}}


def on_two_cpus(script: str, *args: str) -> subprocess.CompletedProcess:
    """`script` (with `args`) finished in a fresh process with two logical CPU devices."""
    done = subprocess.run([sys.executable, "-c", TWO_CPUS + script, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run_dir) -> dict:
    """Per-epoch training and validation loss of a run, from its TensorBoard logs."""
    return {split: scalars(run_dir / "tensorboard" / split, "epoch_loss") for split in ("train", "validation")}


def assert_same_losses(actual: dict, expected: dict) -> None:
    assert len(actual["train"]) == len(expected["train"]) == 2
    for split in expected:
        assert actual[split] == pytest.approx(expected[split], rel=1e-4, abs=1e-5), split


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def single_device_losses(snippets_file, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single_device")
    run(compose_config(*COMPARABLE_RUN, f"task.data_file={snippets_file}", f"run_dir={run_dir}"))
    return losses(run_dir)


# Each global batch of 8 as two accumulated batches of 4: the optimizer steps, and the epoch
# losses with them, must be those of the batches of 8.
ACCUMULATION = pytest.mark.parametrize(
    "accumulation", [(), ("pipeline.batch_size=4", "trainer.grad_accum_steps=2")], ids=["whole", "accumulated"]
)


@ACCUMULATION
def test_mirrored_over_two_cpus_matches_one_device(accumulation, single_device_losses, snippets_file, tmp_path):
    overrides = [*COMPARABLE_RUN, *accumulation, "trainer.strategy=mirrored", f"task.data_file={snippets_file}",
                 f"run_dir={tmp_path}"]
    assert "replicas 2" in on_two_cpus(TWO_CPU_RUN, *overrides).stdout
    assert_same_losses(losses(tmp_path), single_device_losses)


# In a fresh process with two logical CPU devices: mixed_float16 (a LossScaleOptimizer, which
# decides in its apply whether to apply) accumulating two batches of 4 over 2 replicas, against one
# device taking the batches of 8 whole. With `no_merge_call`, the replicas synchronize as
# MirroredStrategy has them do under XLA on GPUs: by collective all-reduces, without merge_calls.
LOSS_SCALED_ACCUMULATION = """
import sys
import numpy as np
import tf_keras
from tensorflow.python.distribute.mirrored_strategy import MirroredExtended
if sys.argv[1] == "no_merge_call":
    MirroredExtended._use_merge_call = lambda self: False
from tests.test_speed_switches import batches, seeded_classifier, train_once
tf_keras.mixed_precision.set_global_policy("mixed_float16")
initial = seeded_classifier().get_weights()
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    model = seeded_classifier()
    accumulated, accumulated_steps = train_once(model, batches(4, 4), grad_accum_steps=2)
    scale = float(model.optimizer.loss_scale)
whole, whole_steps = train_once(seeded_classifier(), batches(2, 8), grad_accum_steps=1)
assert accumulated_steps == whole_steps == 2, (accumulated_steps, whole_steps)
assert scale == 2.0 ** 15, scale  # both steps applied: no overflow halved the loss scale
assert max(np.abs(a - b).max() for a, b in zip(whole, initial)) > 2e-2  # it trained
for a, b in zip(accumulated, whole):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-3)
print("ok")
"""


@pytest.mark.parametrize("synchronization", ["merge_call", "no_merge_call"])
def test_loss_scaled_accumulation_over_two_replicas_equals_the_larger_batch(synchronization):
    assert on_two_cpus(LOSS_SCALED_ACCUMULATION, synchronization).stdout.strip().endswith("ok")


# In a fresh process with two logical CPU devices posing as GPUs: the training step with XLA as
# MirroredStrategy builds it over GPUs (each replica's step a compiled function of its own, in
# which a merge_call is refused). Only traced: XLA on a CPU cannot compile the GPUs' all-reduce.
XLA_OVER_GPUS_TRACE = """
import tf_keras
from tensorflow.python.distribute import mirrored_run, mirrored_strategy
mirrored_run._is_gpu_device = mirrored_strategy._is_gpu_device = lambda device: True
from tests.test_speed_switches import batches, seeded_classifier
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = seeded_classifier()
    model.grad_accum_steps = 2
    model.compile(tf_keras.optimizers.SGD(0.5), tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
model.make_train_function().get_concrete_function(iter(strategy.experimental_distribute_dataset(batches(4, 4))))
print("traced")
"""


def test_accumulation_builds_under_xla_over_gpus():
    assert on_two_cpus(XLA_OVER_GPUS_TRACE).stdout.strip().endswith("traced")


def test_one_device_validated_by_insights_matches_keras_validation(single_device_losses, snippets_file, tmp_path):
    """trainer.strategy=one_device trains as the default; its validation (ValidationInsights'
    one pass, as on a single device) logs the losses Keras' own validation pass logged."""
    overrides = [override for override in COMPARABLE_RUN if not override.startswith("insight.validation_insights")]
    run(compose_config(*overrides, "trainer.strategy=one_device", f"task.data_file={snippets_file}", f"run_dir={tmp_path}"))
    assert_same_losses(losses(tmp_path), single_device_losses)


@ACCUMULATION
def test_two_workers_over_loopback_match_one_worker(accumulation, single_device_losses, snippets_file, tmp_path):
    run_dir, worker_tmp = tmp_path / "run", tmp_path / "worker_tmp"
    worker_tmp.mkdir()
    command = [
        sys.executable, str(LAUNCHER), "--workers", "2", "--timeout", "540", "--log-dir", str(tmp_path / "logs"),
        "--", *COMPARABLE_RUN, *accumulation, f"task.data_file={snippets_file}", f"run_dir={run_dir}",
    ]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(worker_tmp)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_losses(losses(run_dir), single_device_losses)
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["examples"] == 24
    (saved_model,) = run_dir.glob("export/*/*/saved_model.pb")
    served = tf.saved_model.load(str(saved_model.parent)).signatures["serve_ids"]
    outputs = served(
        input_ids=tf.constant([[101, 2307, 102]]), attention_mask=tf.ones((1, 3), tf.int32),
        token_type_ids=tf.zeros((1, 3), tf.int32),
    )
    assert outputs["probabilities"].shape == (1, 2)
    # worker 1 wrote its copies to a temporary dir, removed at the end
    assert not [path for path in worker_tmp.iterdir() if path.name.startswith("tfbert-worker")]
    assert not (run_dir / "tensorboard" / "workertemp_1").exists()
    worker_log = (tmp_path / "logs" / "worker1" / "train.log").read_text()
    assert f"this worker keeps no outputs: the chief's run dir {run_dir}" in worker_log and "artifacts:" not in worker_log
    assert not (run_dir / "backup").exists()  # the chief removed it once the run was done


def test_two_workers_stop_early_together(snippets_file, tmp_path):
    """Both workers read the same all-reduced validation metrics, so early stopping ends the
    run on both at the same epoch (one stopping alone would leave the other waiting)."""
    run_dir = tmp_path / "run"
    frozen_metrics = [  # a learning rate this small leaves validation accuracy as it was: no gain
        "optimizer.learning_rate=1e-12", "trainer.epochs=6", "trainer.early_stopping_patience=1",
    ]
    command = [
        sys.executable, str(LAUNCHER), "--workers", "2", "--timeout", "540", "--log-dir", str(tmp_path / "logs"),
        "--", *COMPARABLE_RUN, *frozen_metrics, f"task.data_file={snippets_file}", f"run_dir={run_dir}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["train_epochs"] == 2


def test_tpu_without_a_tpu_names_what_it_looked_for(snippets_file, tmp_path):
    done = subprocess.run([sys.executable, "train.py", "model=tiny", "trainer.strategy=tpu", f"task.data_file={snippets_file}",
                           f"hydra.run.dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "tfbert: trainer.strategy=tpu found no TPU: looked for this machine's own TPU")


def test_unknown_strategy_and_misplaced_tpu_address():
    with pytest.raises(ValueError, match=r"trainer.strategy must be one of \['default'.*got 'horovod'"):
        build_strategy("horovod")
    with pytest.raises(ValueError, match=r"trainer.tpu='grpc://10.0.0.2:8470' is only read by trainer.strategy=tpu"):
        build_strategy("mirrored", tpu="grpc://10.0.0.2:8470")


def test_default_strategy_keeps_outputs_in_run_dir(tmp_path):
    strategy = build_strategy("default")
    assert is_chief(strategy) and strategy.num_replicas_in_sync == 1
    with worker_dir(tmp_path, strategy) as directory:
        assert directory == tmp_path


@pytest.mark.parametrize(
    "tf_config, message",
    [
        pytest.param(None, "needs the TF_CONFIG environment variable", id="unset"),
        pytest.param("{'cluster': {}}", "TF_CONFIG is not valid JSON", id="bad_json"),
        pytest.param(json.dumps({"task": EXAMPLE_TF_CONFIG["task"]}), "TF_CONFIG needs a `cluster`", id="no_cluster"),
        pytest.param(json.dumps({"cluster": EXAMPLE_TF_CONFIG["cluster"]}), "TF_CONFIG needs a `task`", id="no_task"),
        pytest.param(
            json.dumps({**EXAMPLE_TF_CONFIG, "task": {"type": "worker", "index": 2}}),
            r"task index 2 is out of range for job 'worker' of 2 address\(es\); valid: 0..1",
            id="index_out_of_range",
        ),
        pytest.param(
            json.dumps({**EXAMPLE_TF_CONFIG, "task": {"type": "ps", "index": 0}}),
            r"task type 'ps' is not a job of the cluster; valid: \['worker'\]",
            id="unknown_task_type",
        ),
        pytest.param(
            json.dumps({**EXAMPLE_TF_CONFIG, "cluster": {"worker": ["127.0.0.1"]}}),
            r"cluster job 'worker' must list host:port addresses, got \['127.0.0.1'\]",
            id="address_without_port",
        ),
    ],
)
def test_malformed_tf_config(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        build_strategy("multi_worker")


def test_worker_without_chief_times_out_clearly(monkeypatch):
    chief = f"127.0.0.1:{free_port()}"  # nothing listens there
    cluster = {"worker": [chief, f"127.0.0.1:{free_port()}"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}))
    started = time.monotonic()
    with pytest.raises(ConfigError, match=rf"^trainer: worker 1 could not reach the chief at {chief} within 1s"), \
            config_group("trainer", {"strategy": "multi_worker"}):  # as tfbert.train builds it: a one-line error
        build_strategy("multi_worker", connect_timeout=1)
    assert time.monotonic() - started < 15


def test_global_batch_must_divide_across_replicas():
    two_replicas = SimpleNamespace(num_replicas_in_sync=2)
    assert check_global_batch(8, two_replicas) == 4
    with pytest.raises(ValueError, match=r"pipeline.batch_size=7 is the global batch .* the 2 replicas .* try 6"):
        check_global_batch(7, two_replicas)


def test_batches_are_sharded_by_data_even_across_epochs():
    split = datasets.Dataset.from_dict(
        {"input_ids": [[101, 7, 102], [101, 102]], "token_type_ids": [[0, 0, 0], [0, 0]], "label": [0, 1]}
    )
    epoch = Pipeline(batch_size=2)(split, training=True)
    data_policy = tf.data.experimental.AutoShardPolicy.DATA
    assert epoch.options().experimental_distribute.auto_shard_policy == data_policy
    assert stream_epochs(epoch, epochs=2).options().experimental_distribute.auto_shard_policy == data_policy
