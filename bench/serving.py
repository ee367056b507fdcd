"""Serving speed: tfbert's raw-text SavedModel vs a transformers pipeline on PyTorch.

Both serve the same fine-tuned weights, on sentiment-corpus sentences, each in its own
process with the same thread count:

  tensorflow  the export of a run (`<run_dir>/export/sentiment/1`, from `python train.py`):
              its `serving_default` signature, raw strings in (tokenized in the graph),
              as tfbert.predict serves it: TensorFlow's oneDNN kernels on, one thread
              per op and as many ops at once as threads (--tf-intra-op to change it).
  pytorch     transformers `pipeline("text-classification")` on a PyTorch
              BertForSequenceClassification holding the same weights (torch CPU).

The PyTorch model is converted from the SavedModel itself: every variable of the
served Keras model is renamed to its BertForSequenceClassification name
(transformers' TF -> PyTorch name rules; kernels transposed), the head's output layer
becomes `classifier`, and the backbone's config and tokenizer are saved beside them.
So only head=pooler without hidden_units (BERT's own classifier: pooler, dropout,
dense) has a twin. The two must give the same probabilities within 1e-4 on a few
corpus sentences, or the script stops.

Measured, after warmup calls: batch-32 throughput (sentences/s over --sentences
sentences, one call per batch of 32) and batch-1 latency (p50, p95 over
--latency-calls calls of one sentence). The targets: tfbert's throughput >= 2x the
pipeline's, its batch-1 p50 <= 0.6x the pipeline's. Both systems run --rounds times, one
after the other in each round; a ratio is taken within a round and the rounds are
summarized by the median ratio (a shared machine's speed drifts over minutes). Beside
them, a TensorFlow profile of --profile-calls batch-1 calls (self-time per op type).

    python bench/serving.py outputs/sentiment/pooler/<date>_<time>/export/sentiment/1
    python bench/serving.py <export> --quick      # a check in minutes (serving_quick.{json,md})

Writes bench/results/serving.json and serving.md. PyTorch must be installed:
pip install torch==2.13.0 (the `bench` extra).
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from common import (
    announce, at_least, quick_banner, run_if_worker,
    load_average_at_end, load_tensorflow, machine_info, add_worker_arguments, onednn_enabled, profile_lines, profile_op_types,
    report_footer, peak_rss_mb, require_torch, run_worker, write_results,
)

BATCH_SIZE = 32
CHECK_SENTENCES = 8
TOLERANCE = 1e-4
TARGETS = {"throughput_ratio": 2.0, "p50_latency_ratio": 0.6}
POOLER_HEAD = "tfbert.heads.PoolerHead"


def read_run(export: Path, run_dir: Path | None) -> dict:
    """Backbone, head, labels and max length of the run that made `export`."""
    from omegaconf import OmegaConf

    if not (export / "saved_model.pb").is_file():
        raise SystemExit(f"{export} holds no saved_model.pb: give an export version dir, e.g. <run_dir>/export/sentiment/1")
    run_dir = run_dir or export.parents[2]  # <run_dir>/export/<name>/<version>
    config_file, task_file = run_dir / "config.yaml", run_dir / "task.json"
    if not (config_file.is_file() and task_file.is_file()):
        raise SystemExit(f"{run_dir} holds no config.yaml and task.json of a tfbert run; pass the run with --run-dir")
    cfg = OmegaConf.load(config_file)
    if cfg.head._target_ != POOLER_HEAD or cfg.head.get("hidden_units"):
        raise SystemExit(
            f"{run_dir}: head {cfg.head._target_} (hidden_units {list(cfg.head.get('hidden_units') or [])}) has no "
            "BertForSequenceClassification twin; compare a run with head=pooler and no hidden_units"
        )
    task = json.loads(task_file.read_text())
    return {"backbone": cfg.model.name_or_path, "label_names": task["label_names"], "max_length": task["max_length"]}


def corpus_sentences(count: int) -> list[str]:
    """`count` sentences of the sentiment corpus (all splits, in the split order; repeated if needed)."""
    from tfbert.tasks.sentiment import load_sentiment

    texts = [text for split in load_sentiment().splits.values() for text in split["text"]]
    return [texts[index % len(texts)] for index in range(count)]


def measure(predict, args) -> dict:
    """Throughput of batches of 32 and latency of single sentences; `predict(texts)` -> probabilities."""
    sentences = corpus_sentences(max(args.sentences, args.latency_calls))
    batches = [sentences[start : start + BATCH_SIZE] for start in range(0, args.sentences, BATCH_SIZE)]
    for batch in batches[:2]:
        predict(batch)
    started = time.perf_counter()
    for batch in batches:
        predict(batch)
    throughput = sum(map(len, batches)) / (time.perf_counter() - started)
    for sentence in sentences[:5]:
        predict([sentence])
    latencies = []
    for sentence in sentences[: args.latency_calls]:
        started = time.perf_counter()
        predict([sentence])
        latencies.append((time.perf_counter() - started) * 1000)
    percentiles = statistics.quantiles(latencies, n=100)
    return {
        "throughput_sentences_per_second": throughput,
        "latency_p50_ms": statistics.median(latencies),
        "latency_p95_ms": percentiles[94],
        "check_probabilities": [list(map(float, row)) for row in predict(sentences[:CHECK_SENTENCES])],
    }


def run_tensorflow(args) -> dict:
    """The SavedModel's serving_default; also writes the PyTorch twin of its weights.

    Served as tfbert.predict serves it: tfbert's environment (TensorFlow's oneDNN kernels on,
    TF_ENABLE_ONEDNN_OPTS=1, what a server should set too) and --tf-intra-op threads per op.
    """
    import tfbert  # noqa: F401  (tfbert's environment, before TensorFlow loads)

    tf = load_tensorflow(args.threads, intra_op=args.tf_intra_op)
    import tensorflow_text  # noqa: F401  (registers the in-graph tokenizer's ops)

    loaded = tf.saved_model.load(str(args.export))
    # The classifier's weights: `weights` since exports stopped holding the Keras model, `model` before.
    weights = loaded.weights if hasattr(loaded, "weights") else loaded.model.variables
    write_pytorch_twin(weights, read_run(args.export, args.run_dir), args.pytorch_dir)
    serve = loaded.signatures["serving_default"]

    def predict(texts):
        return serve(text=tf.constant(texts))["probabilities"].numpy()  # (batch, classes)

    result = measure(predict, args)
    if args.profile_calls:
        sentences = corpus_sentences(args.profile_calls)
        result["profile"] = profile_op_types(lambda: [predict([sentence]) for sentence in sentences])
    threading = {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                 "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
    return {**result, "onednn": onednn_enabled(), "threading": threading, "peak_rss_mb": peak_rss_mb()}


def write_pytorch_twin(variables, run: dict, directory: Path) -> None:
    """A BertForSequenceClassification directory (weights, config, tokenizer) of the served model's variables."""
    from safetensors.numpy import save_file
    from transformers import BertConfig
    from transformers.modeling_tf_pytorch_utils import TransposeType, convert_tf_weight_name_to_pt_weight_name

    from tfbert.model_dir import resolve_model_dir
    from tfbert.preprocessing import load_tokenizer

    tensors = {}
    for variable in variables:
        # e.g. tf_bert_model/bert/encoder/layer_._0/attention/self/query/kernel:0
        #   -> bert.encoder.layer.0.attention.self.query.weight (transposed)
        name, transpose = convert_tf_weight_name_to_pt_weight_name(variable.name, tf_weight_shape=variable.shape)
        name = name.replace("logits.", "classifier.", 1)  # the pooler head's output layer
        value = variable.numpy()
        tensors[name] = value.T.copy() if transpose is TransposeType.SIMPLE else value
    labels = dict(enumerate(run["label_names"]))
    config = BertConfig.from_pretrained(
        resolve_model_dir(run["backbone"], weights=False), id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    config.save_pretrained(directory)
    load_tokenizer(run["backbone"]).save_pretrained(directory)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})


def run_pytorch(args) -> dict:
    """transformers' text-classification pipeline on the converted weights, torch CPU."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, pipeline

    torch.set_num_threads(args.threads)
    model, info = BertForSequenceClassification.from_pretrained(args.pytorch_dir, output_loading_info=True)
    if info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"]:
        raise SystemExit(f"the converted weights do not fit BertForSequenceClassification: {info}")
    classify = pipeline(
        "text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(args.pytorch_dir), device=-1
    )
    label_ids = model.config.label2id
    max_length = read_run(args.export, args.run_dir)["max_length"]

    def predict(texts):
        # top_k=None: every label's probability, most probable first.
        outputs = classify(texts, batch_size=len(texts), top_k=None, truncation=True, max_length=max_length)
        rows = []
        for scores in outputs:
            row = [0.0] * len(label_ids)
            for score in scores:
                row[label_ids[score["label"]]] = score["score"]
            rows.append(row)
        return rows

    return {**measure(predict, args), "peak_rss_mb": peak_rss_mb()}


WORKERS = {"tensorflow": run_tensorflow, "pytorch": run_pytorch}


def markdown(report: dict) -> str:
    rounds, ratios = report["rounds"], report["ratios"]
    tf_row = rounds[0]["tensorflow"]
    lines = quick_banner(report) + [
        f"Serving {report['export']}: batch-{BATCH_SIZE} throughput over {report['sentences']} sentences, "
        f"batch-1 latency over {report['latency_calls']} calls, {report['threads']} threads, {len(rounds)} rounds "
        "(each round runs both systems, one after the other). Same weights "
        f"(converted from the SavedModel); probabilities agree within {report['max_probability_difference']:.1e}. "
        f"TensorFlow's oneDNN kernels {'on' if tf_row.get('onednn') else 'off'} (TF_ENABLE_ONEDNN_OPTS, as tfbert "
        f"sets it); TensorFlow threads: {tf_row['threading']['intra_op']} per op, up to "
        f"{tf_row['threading']['inter_op']} ops at once; PyTorch: {report['threads']}.",
        "",
        "| round | system | throughput (sentences/s) | p50 latency (ms) | p95 latency (ms) | peak RSS (MB) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {number} | {label} | {row['throughput_sentences_per_second']:.1f} | {row['latency_p50_ms']:.1f} "
            f"| {row['latency_p95_ms']:.1f} | {row['peak_rss_mb']:.0f} |"
            for number, systems in enumerate(rounds, start=1)
            for label, row in (("tfbert SavedModel (TensorFlow)", systems["tensorflow"]),
                               ("transformers pipeline (PyTorch)", systems["pytorch"]))
        ),
        "",
        "| ratio tfbert / pipeline | each round | median | target | met (median) |",
        "|---|---|---|---|---|",
        *(
            f"| {label} | {', '.join(f'{value:.2f}x' for value in ratios['rounds'][key])} | {ratios[key]:.2f}x "
            f"| {sign} {TARGETS[key]}x | {'yes' if ratios[key.replace('_ratio', '_met')] else 'no'} |"
            for label, key, sign in (("throughput", "throughput_ratio", ">="),
                                     ("batch-1 p50 latency", "p50_latency_ratio", "<="))
        ),
        *(["", *profile_lines(
            tf_row["profile"], f"{report['profile_calls']} batch-1 calls of the SavedModel (round 1)",
            f"{tf_row['profile']['busy_ms'] / report['profile_calls']:.1f} ms of op time per call",
        )] if "profile" in tf_row else []),
        *report_footer(report),
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("export", type=Path, help="an export version dir: <run_dir>/export/sentiment/1")
    parser.add_argument("--run-dir", type=Path, help="the run that made the export (default: three levels up)")
    parser.add_argument("--quick", action="store_true", help="fewer sentences and calls: a check in minutes")
    parser.add_argument("--sentences", type=at_least(2), help="sentences for the throughput (default 2048; 256 with --quick)")
    parser.add_argument("--latency-calls", type=at_least(2), help="batch-1 calls for the latency (default 300; 40 with --quick)")
    parser.add_argument("--profile-calls", type=at_least(0),
                        help="batch-1 calls traced by the TensorFlow profiler after the timed ones "
                             "(default 100; 10 with --quick; 0: none)")
    parser.add_argument("--rounds", type=at_least(1), help="rounds of both systems; the ratios are their medians "
                        "(default 3; 1 with --quick)")
    parser.add_argument("--tf-intra-op", type=at_least(1), default=1,
                        help="TensorFlow's threads per op (default 1, as tfbert.predict serves: ops run in "
                             "parallel on --threads inter-op threads; --tf-intra-op equal to --threads is "
                             "TensorFlow's default, every thread on every op)")
    add_worker_arguments(parser, WORKERS)
    parser.add_argument("--pytorch-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.export = args.export.resolve()
    args.sentences = args.sentences or (256 if args.quick else 2048)
    args.latency_calls = args.latency_calls or (40 if args.quick else 300)
    args.rounds = args.rounds or (1 if args.quick else 3)
    if args.profile_calls is None:
        args.profile_calls = 10 if args.quick else 100
    return args


def main():
    args = parse_args()
    if run_if_worker(args, WORKERS):
        return
    read_run(args.export, args.run_dir)  # an unusable export fails now, not in a worker
    require_torch("bench/serving.py")
    command = announce()
    info = machine_info()
    rounds = []
    with tempfile.TemporaryDirectory() as pytorch_dir:
        for number in range(args.rounds):
            profile_calls = args.profile_calls if number == 0 else 0  # the profile once, in round 1
            arguments = [str(args.export), "--sentences", str(args.sentences), "--latency-calls", str(args.latency_calls),
                         "--profile-calls", str(profile_calls), "--tf-intra-op", str(args.tf_intra_op),
                         "--pytorch-dir", pytorch_dir, *(["--run-dir", str(args.run_dir)] if args.run_dir else [])]
            print(f"--- round {number + 1} of {args.rounds}", flush=True)
            rounds.append({name: run_worker(Path(__file__), name, name, args.threads, arguments) for name in WORKERS})
    difference = max(
        abs(a - b)
        for systems in rounds
        for tf_row, pt_row in zip(systems["tensorflow"]["check_probabilities"], systems["pytorch"]["check_probabilities"])
        for a, b in zip(tf_row, pt_row)
    )
    if difference > TOLERANCE:
        raise SystemExit(f"the two models disagree: probabilities differ by up to {difference:.2e} (> {TOLERANCE})")
    # Each round's ratios, then their medians: the machine's speed drifts, so a ratio is taken
    # within a round and the rounds are summarized by the median.
    each = {
        "throughput_ratio": [systems["tensorflow"]["throughput_sentences_per_second"]
                             / systems["pytorch"]["throughput_sentences_per_second"] for systems in rounds],
        "p50_latency_ratio": [systems["tensorflow"]["latency_p50_ms"] / systems["pytorch"]["latency_p50_ms"]
                              for systems in rounds],
    }
    ratios = {key: statistics.median(values) for key, values in each.items()}
    ratios["throughput_met"] = ratios["throughput_ratio"] >= TARGETS["throughput_ratio"]
    ratios["p50_latency_met"] = ratios["p50_latency_ratio"] <= TARGETS["p50_latency_ratio"]
    ratios["rounds"] = each
    report = {
        "command": command,
        "quick": args.quick,
        "export": str(args.export),
        "sentences": args.sentences,
        "latency_calls": args.latency_calls,
        "profile_calls": args.profile_calls,
        "threads": args.threads,
        "machine": load_average_at_end(info),
        "max_probability_difference": difference,
        "targets": TARGETS,
        "ratios": ratios,
        "rounds": rounds,
    }
    write_results("serving_quick" if args.quick else "serving", report, markdown(report))


if __name__ == "__main__":
    main()
