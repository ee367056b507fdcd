"""TensorFlow's CPU threading: one thread per op, several ops at once.

Small matrices multiply faster on one core each, side by side, than on every core in
turn: training runs a batch as parallel slices (tfbert.classifier.Classifier), serving
runs each encoder layer as parallel branches (tfbert.packed). Both need the threading
set before TensorFlow's runtime starts.
"""

import logging
import os

import tensorflow as tf

log = logging.getLogger(__name__)


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def one_thread_per_op(ops_at_once: int) -> None:
    """Run each TensorFlow op on one thread, up to `ops_at_once` ops at a time.

    Only possible before TensorFlow's runtime starts; after that, a warning says the
    runtime keeps its threads (the results are the same, only the speed differs).
    """
    threads = tf.config.threading
    try:
        threads.set_intra_op_parallelism_threads(1)
        threads.set_inter_op_parallelism_threads(ops_at_once)
    except RuntimeError:
        if threads.get_intra_op_parallelism_threads() == 1 and threads.get_inter_op_parallelism_threads() >= ops_at_once:
            return
        log.warning(
            "TensorFlow started already: it keeps %d threads per op and %d ops at once, so its ops do "
            "not run one thread each (set it up before any TensorFlow work for the speed)",
            threads.get_intra_op_parallelism_threads(), threads.get_inter_op_parallelism_threads(),
        )
