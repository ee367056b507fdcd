"""tf.distribute strategies by name: one machine, several GPUs, several machines, a TPU.

`trainer.strategy` picks one; nothing else in a run changes:

    default        no distribution: one device (TensorFlow's default placement)
    one_device     the first GPU, else the CPU, explicitly
    mirrored       every local GPU (on a machine without GPUs: every logical CPU device)
    multi_worker   every worker named in TF_CONFIG, each running the same command
    tpu            a Cloud TPU VM's TPU (`trainer.tpu` unset), or a TPU node by name or address

The config batch size is the GLOBAL batch: Keras splits each batch across the
`num_replicas_in_sync` replicas, so it must divide evenly (`check_global_batch`).

With `multi_worker` only the chief (TF_CONFIG task `chief` 0, else `worker` 0) keeps
what it writes; every other worker writes to a temporary dir that is deleted at the end
(`worker_dir`). Keras' BackupAndRestore (tfbert.checkpoints.Backup) redirects other
workers' writes itself, so the backup alone takes the shared run dir on every worker.
"""

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

import tensorflow as tf

from tfbert.checks import is_whole_number

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu")
# How long a non-chief worker waits for the chief's port before giving up.
CONNECT_TIMEOUT_SECONDS = 300.0


def build_strategy(
    name: str = "default", tpu: str | None = None, connect_timeout: float = CONNECT_TIMEOUT_SECONDS
) -> tf.distribute.Strategy:
    """The strategy called `name` (one of STRATEGIES), ready to open a scope.

    Build it before any other TensorFlow work of the process: `multi_worker` configures
    the TensorFlow runtime, which is only possible before it starts.

    Args:
        name: `default`, `one_device`, `mirrored`, `multi_worker` or `tpu`.
        tpu: for `tpu`: None or `local` for the TPU of this Cloud TPU VM, else a TPU
            node's name or `grpc://host:port` address.
        connect_timeout: for `multi_worker`: seconds a non-chief worker waits for the
            chief to accept connections.
    """
    if name not in STRATEGIES:
        raise ValueError(f"trainer.strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if tpu is not None and name != "tpu":
        raise ValueError(f"trainer.tpu={tpu!r} is only read by trainer.strategy=tpu, got strategy {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy((gpus or tf.config.list_logical_devices("CPU"))[0].name)
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.MirroredStrategy([device.name for device in gpus or tf.config.list_logical_devices("CPU")])
    if name == "multi_worker":
        cluster, task_type, task_index = read_tf_config(os.environ.get("TF_CONFIG"))
        chief = chief_address(cluster)
        if (task_type, task_index) != chief_task(cluster):
            wait_for_chief(chief, task_type, task_index, connect_timeout)
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tpu_strategy(tpu)


def read_tf_config(tf_config: str | None) -> tuple[dict, str, int]:
    """(cluster, task type, task index) of TF_CONFIG, checked for what multi_worker needs.

    TF_CONFIG looks like
    `{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}`
    (a `chief` job of one address may come first; `worker` 0 is the chief otherwise).
    """
    example = '{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'
    if not tf_config:
        raise ValueError(f"trainer.strategy=multi_worker needs the TF_CONFIG environment variable, e.g. {example}")
    try:
        config = json.loads(tf_config)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {tf_config!r}; expected e.g. {example}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not config["cluster"]:
        raise ValueError(f"TF_CONFIG needs a `cluster` of job name -> list of host:port, got {tf_config!r}; e.g. {example}")
    if not isinstance(config.get("task"), dict):
        raise ValueError(f"TF_CONFIG needs a `task` with this process's type and index, got {tf_config!r}; e.g. {example}")
    cluster, task = config["cluster"], config["task"]
    for job, addresses in cluster.items():
        if job not in ("chief", "worker"):
            raise ValueError(f"TF_CONFIG cluster job {job!r} is not supported by multi_worker; valid: chief, worker")
        if not isinstance(addresses, list) or not addresses or not all(_is_address(address) for address in addresses):
            raise ValueError(f"TF_CONFIG cluster job {job!r} must list host:port addresses, got {addresses!r}")
    if len(cluster.get("chief", [])) > 1:
        raise ValueError(f"TF_CONFIG cluster may have one chief, got {cluster['chief']!r}")
    task_type, task_index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise ValueError(f"TF_CONFIG task type {task_type!r} is not a job of the cluster; valid: {sorted(cluster)}")
    if not is_whole_number(task_index, 0, len(cluster[task_type]) - 1):
        raise ValueError(
            f"TF_CONFIG task index {task_index!r} is out of range for job {task_type!r} of "
            f"{len(cluster[task_type])} address(es); valid: 0..{len(cluster[task_type]) - 1}"
        )
    return cluster, task_type, task_index


def _is_address(address) -> bool:
    host, _, port = str(address).rpartition(":")
    return isinstance(address, str) and bool(host) and port.isdigit()


def chief_task(cluster: dict) -> tuple[str, int]:
    """The task that keeps the run's outputs: `chief` 0 if the cluster has one, else `worker` 0."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def chief_address(cluster: dict) -> str:
    task_type, task_index = chief_task(cluster)
    return cluster[task_type][task_index]


def wait_for_chief(address: str, task_type: str, task_index: int, timeout: float) -> None:
    """Return once the chief at `address` (host:port) accepts connections; TimeoutError after `timeout` s.

    Without this, a worker whose chief never comes up would wait inside TensorFlow
    for a long time without saying why.
    """
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, max(timeout, 0.1))):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{task_type} {task_index} could not reach the chief at {address} within {timeout:g}s "
                    f"({error}). Start the chief with the same TF_CONFIG cluster, and check that the "
                    f"address is right and its port open."
                ) from None
        time.sleep(0.5)


def tpu_strategy(tpu: str | None) -> tf.distribute.TPUStrategy:
    """A TPUStrategy on the TPU `tpu` (None: this Cloud TPU VM's own TPU)."""
    where = "this machine's own TPU (trainer.tpu unset: a Cloud TPU VM)" if tpu in (None, "local") else f"the TPU {tpu!r}"
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local" if tpu is None else tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        first_line = str(error).strip().splitlines()[0]
        raise ValueError(  # a setting that cannot work on this machine: a one-line error
            f"trainer.strategy=tpu found no TPU: looked for {where}; TensorFlow says: {first_line}. "
            f"On a TPU node, set trainer.tpu to its name or grpc://host:port; without a TPU use another strategy."
        ) from None
    return tf.distribute.TPUStrategy(resolver)


def all_workers_here(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker of `strategy` has called this (a tiny all-reduce across them)."""
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)


def check_global_batch(batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """The per-replica batch of a global `batch_size`; ValueError unless the replicas share it evenly."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(
            f"pipeline.batch_size={batch_size} is the global batch and must divide evenly across the "
            f"{replicas} replicas of this strategy; try {max(replicas, batch_size // replicas * replicas)}"
        )
    return batch_size // replicas


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process keeps the run's outputs (always, but for non-chief multi_worker workers)."""
    return strategy.extended.should_checkpoint


@contextlib.contextmanager
def worker_dir(run_dir: Path, strategy: tf.distribute.Strategy):
    """Yields where this process writes its outputs: `run_dir` on the chief, else a
    temporary dir that is deleted on exit (other workers' copies are never kept).
    """
    if is_chief(strategy):
        yield Path(run_dir)
        return
    resolver = strategy.cluster_resolver
    temporary = Path(tempfile.mkdtemp(prefix=f"tfbert-{resolver.task_type}{resolver.task_id}-"))
    try:
        yield temporary
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
