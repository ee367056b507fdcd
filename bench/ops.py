"""The encoder ops tfbert replaces, against the ones transformers uses, forward + backward.

    gelu        transformers' "gelu" (exact, erf; TFBertIntermediate's)  vs tfbert.gelu.gelu
    dropout     tf_keras.layers.Dropout (training)                   vs tfbert.dropout.Dropout
    layer_norm  tf_keras.layers.LayerNormalization(epsilon=1e-12)    vs tfbert.layer_norm's

Each op runs on the shape it has in a MiniLM training step (batch 32, --length tokens:
hidden 384 for dropout and layer norm, intermediate 1536 for GELU), as one tf.function
computing the output and the gradients of the input and of the op's weights, if any.
The two versions of an op run in alternating rounds (this machine's speed drifts by 20%
within minutes); the result per op is the median over rounds of tfbert's time / the
reference's time in the same round.

    python bench/ops.py                        # bench/results/ops.{json,md}
    python bench/ops.py --dtype bfloat16 --rounds 30
"""

import argparse
import os
import statistics
import sys
import time

from common import at_least, load_average_at_end, load_tensorflow, machine_info, machine_line, write_results

CALLS_PER_ROUND = 20


def op_pairs(tf, args) -> dict:
    """{op: (transformers' function, tfbert's, input shape)}: functions of one input tensor."""
    import tf_keras
    from transformers.activations_tf import get_tf_activation

    from tfbert.dropout import Dropout
    from tfbert.gelu import gelu
    from tfbert.layer_norm import LayerNormalization

    # Layers in the run's policy (16-bit compute, float32 weights): a float32 layer would
    # cast 16-bit inputs up and time float32 work.
    policy = "float32" if args.dtype == "float32" else f"mixed_{args.dtype}"
    keras_dropout, tfbert_dropout = tf_keras.layers.Dropout(0.1, dtype=policy), Dropout(0.1, dtype=policy)
    keras_layer_norm = tf_keras.layers.LayerNormalization(epsilon=1e-12, dtype=policy)
    tfbert_layer_norm = LayerNormalization(epsilon=1e-12, dtype=policy)  # BERT's epsilon

    def transformers_dropout(x):
        return keras_dropout(x, training=True)

    def tfbert_dropout_training(x):
        return tfbert_dropout(x, training=True)

    return {
        "gelu": (get_tf_activation("gelu"), gelu, (args.batch_size, args.length, 1536)),
        "dropout": (transformers_dropout, tfbert_dropout_training, (args.batch_size, args.length, 384)),
        "layer_norm": (keras_layer_norm, tfbert_layer_norm, (args.batch_size, args.length, 384)),
    }


def forward_backward(tf, function, shape, dtype):
    """A tf.function running `function` and its gradients on fixed random inputs; returns a scalar.

    The gradients are the input's and, for a layer, its trainable weights' (a training step needs both).
    """
    x = tf.Variable(tf.cast(tf.random.stateless_normal(shape, seed=[1, 2]), dtype))
    upstream = tf.cast(tf.random.stateless_normal(shape, seed=[3, 4]), dtype)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            y = function(x.read_value())
        sources = [x, *getattr(function, "trainable_variables", [])]  # a layer is built by now
        gradients = tape.gradient(y, sources, output_gradients=upstream)
        firsts = [tf.cast(tf.reshape(value, [-1])[0], tf.float32) for value in [y, *gradients]]
        return tf.add_n(firsts)

    return step


def seconds_per_call(step) -> float:
    started = time.perf_counter()
    for _ in range(CALLS_PER_ROUND):
        result = step()
    float(result)  # waits for the last call
    return (time.perf_counter() - started) / CALLS_PER_ROUND


def measure(tf, args) -> dict:
    dtype = getattr(tf, args.dtype)
    results = {}
    for op, (reference, replacement, shape) in op_pairs(tf, args).items():
        steps = {"reference": forward_backward(tf, reference, shape, dtype),
                 "tfbert": forward_backward(tf, replacement, shape, dtype)}
        for step in steps.values():
            step()  # trace
        times = {name: [] for name in steps}
        for round_ in range(args.rounds):
            for name in (steps if round_ % 2 == 0 else reversed(list(steps))):
                times[name].append(seconds_per_call(steps[name]))
        results[op] = {
            "shape": list(shape),
            "reference_ms": 1e3 * statistics.median(times["reference"]),
            "tfbert_ms": 1e3 * statistics.median(times["tfbert"]),
            "ratio": statistics.median(t / r for t, r in zip(times["tfbert"], times["reference"])),
        }
        print(op, results[op], flush=True)
    return results


def markdown(report: dict) -> str:
    lines = [
        f"Encoder ops, forward + backward, {report['dtype']}, {report['threads']} threads, median of "
        f"{report['rounds']} alternating rounds of {CALLS_PER_ROUND} calls.",
        "",
        "| op | shape | transformers' (ms) | tfbert's (ms) | tfbert / transformers (paired median) |",
        "|---|---|---|---|---|",
    ]
    for op, row in report["ops"].items():
        lines.append(f"| {op} | {tuple(row['shape'])} | {row['reference_ms']:.2f} | {row['tfbert_ms']:.2f} | "
                     f"{row['ratio']:.2f}x |")
    return "\n".join(lines + ["", machine_line(report["machine"]), "", f"Command: `{report['command']}`", ""])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--length", type=at_least(1), default=31, help="padded tokens per sentence (default 31: a median batch)")
    parser.add_argument("--batch-size", type=at_least(1), default=32)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    parser.add_argument("--rounds", type=at_least(1), default=20)
    parser.add_argument("--threads", type=at_least(1), default=os.cpu_count(), help="TensorFlow threads (default: all cores)")
    args = parser.parse_args(argv)
    info = machine_info()
    import tfbert  # noqa: F401  (oneDNN kernels on, as in a tfbert run, before TensorFlow loads)

    tf = load_tensorflow(args.threads)
    report = {"command": " ".join(["python bench/ops.py", *(sys.argv[1:] if argv is None else argv)]),
              "dtype": args.dtype, "threads": args.threads, "rounds": args.rounds,
              "ops": measure(tf, args)}
    report["machine"] = load_average_at_end(info)
    write_results("ops", report, markdown(report))


if __name__ == "__main__":
    main()
