"""Feature extraction (frozen encoder, outputs cached) vs full fine-tuning, and every head on it.

In one process, on the sentiment task with MiniLM, under `experiment=feature_extraction`
(model.freeze=all, its learning rate and epochs):

  1. full fine-tuning speed: training examples/s of the default classifier (head=pooler,
     encoder trainable) over --steps batches, after --warmup batches;
  2. the one-time encoding of train, validation and test (examples/s), as
     tfbert.features does it for a frozen run, hidden_states included;
  3. every head x every seed trained on those outputs with tfbert's Trainer, as
     `python train.py experiment=feature_extraction head=<head> seed=<seed>` trains
     it, then evaluated on the test split's outputs; head training examples/s is
     timed over the epochs after the first (the first one traces the graph), without
     validation.

The target (issue 9): head training on cached outputs >= 10x the examples/s of full
fine-tuning. Writes bench/results/feature_extraction.{json,md}.

    python bench/feature_extraction.py                   # 8 heads x seeds 1 2 3
    python bench/feature_extraction.py --quick           # 2 heads, 1 seed, 500 train examples
"""

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import tfbert  # noqa: F401  (before TensorFlow: selects tf-keras)
import tensorflow as tf
import tf_keras
from hydra import compose as hydra_compose, initialize_config_dir
from hydra.utils import instantiate

from common import ROOT, at_least, load_average_at_end, machine_info, mean_std, peak_rss_mb, report_footer, write_results
from tfbert.classifier import build_classifier
from tfbert.evaluation import evaluate
from tfbert.features import build_head_model, encode_split
from tfbert.objectives import loss_and_metrics
from tfbert.preprocessing import Preprocessor, load_tokenizer

HEADS = ["pooler", "cls", "mean", "max", "cls_mean", "last4_cls", "scalar_mix", "attention"]
TARGET_SPEEDUP = 10.0


class TrainingTimer(tf_keras.callbacks.Callback):
    """Seconds of each epoch's training batches (validation excluded)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.last_batch_end = time.perf_counter()

    def on_test_begin(self, logs=None):
        self.epochs.append(self.last_batch_end - self.started)


def compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=["experiment=feature_extraction", *overrides])


def fine_tuning_speed(cfg, task, train_batches, warmup: int, steps: int) -> dict:
    """Training examples/s of the classifier with a trainable encoder (the default run's model)."""
    backbone = instantiate(cfg.model, freeze="none")
    model = build_classifier(backbone, instantiate(cfg.head)(num_outputs=task.num_outputs))
    loss, metrics = loss_and_metrics(task.problem_type)
    model.compile(optimizer=instantiate(cfg.optimizer)(num_train_steps=warmup + steps), loss=loss, metrics=metrics)
    sample = train_batches.take(warmup + steps).cache()
    sizes = [int(tf.shape(labels)[0]) for _, labels in sample]
    model.fit(sample.take(warmup), verbose=0)
    started = time.perf_counter()
    model.fit(sample.skip(warmup), verbose=0)
    seconds = time.perf_counter() - started
    examples = sum(sizes[warmup:])
    return {"examples": examples, "seconds": round(seconds, 2), "examples_per_second": examples / seconds}


def train_head(cfg, task, pipeline, splits, head_name: str, seed: int, scratch: Path) -> dict:
    """One frozen-encoder run of `head_name`: Trainer.fit on cached outputs, test metrics."""
    head_cfg = compose([f"head={head_name}"]).head
    tf_keras.utils.set_random_seed(seed)
    head = instantiate(head_cfg)(num_outputs=task.num_outputs)
    keep = {"last_hidden_state", "pooler_output", "attention_mask", *head.reads}  # what encode_split keeps for it
    encoded = {name: split.select(sorted(keep)) for name, split in splits.items()}
    model = build_head_model(head, encoded["train"].signature())
    trainer = instantiate(cfg.trainer)
    train = encoded["train"].dataset(instantiate(cfg.pipeline, seed=seed), training=True)
    steps = sum(1 for _ in train)
    optimizer = instantiate(cfg.optimizer)(num_train_steps=trainer.optimizer_steps(steps), num_layers=1)
    loss, metrics = loss_and_metrics(task.problem_type)
    timer = TrainingTimer()
    run_dir = scratch / f"{head_name}_{seed}"
    trainer.fit(model, optimizer, loss, metrics, train, steps, encoded["validation"].dataset(pipeline), run_dir,
                callbacks=[timer])
    test = evaluate(model, encoded["test"].dataset(pipeline), task.label_names, task.problem_type)
    later = timer.epochs[1:] or timer.epochs
    return {
        "head": head_name,
        "seed": seed,
        "test_accuracy": test["accuracy"],
        "test_f1_macro": test["f1_macro"],
        "train_examples_per_second": len(encoded["train"]) * len(later) / sum(later),
    }


def markdown(report: dict) -> str:
    speed = report["speed"]
    lines = [
        f"Feature extraction on the sentiment task (MiniLM encoder frozen; {report['epochs']} epochs, "
        f"learning rate {report['learning_rate']}, best validation epoch kept), test split of "
        f"{report['test_examples']} sentences; mean ± std over seeds {report['seeds']}.",
        "",
        "| head | test accuracy | test macro F1 | head training (examples/s) |",
        "|---|---|---|---|",
    ]
    for head in dict.fromkeys(row["head"] for row in report["runs"]):
        rows = [row for row in report["runs"] if row["head"] == head]
        lines.append(f"| {head} | {mean_std([row['test_accuracy'] for row in rows])} "
                     f"| {mean_std([row['test_f1_macro'] for row in rows])} "
                     f"| {statistics.mean(row['train_examples_per_second'] for row in rows):,.0f} |")
    met = "met" if speed["speedup"] >= TARGET_SPEEDUP else "not met"
    lines += [
        "",
        "| training examples/s | measured |",
        "|---|---|",
        f"| full fine-tuning (encoder trains, head=pooler) | {speed['fine_tuning']['examples_per_second']:,.1f} |",
        f"| one-time encoding of all splits (hidden_states included) | {speed['encoding_examples_per_second']:,.1f} |",
        f"| head training on cached outputs (slowest head: {speed['slowest_head']}) | {speed['slowest_head_examples_per_second']:,.0f} |",
        f"| speedup of the slowest head over full fine-tuning | {speed['speedup']:,.0f}x (target >= {TARGET_SPEEDUP:.0f}x: {met}) |",
        "",
        f"Peak RSS {report['peak_rss_mb']:,.0f} MB.",
    ]
    return "\n".join(lines + report_footer(report)) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=HEADS, choices=HEADS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--warmup", type=at_least(1), default=3, help="fine-tuning batches before timing")
    parser.add_argument("--steps", type=at_least(1), default=20, help="fine-tuning batches timed")
    parser.add_argument("--quick", action="store_true", help="2 heads, 1 seed, 500 train examples, 2 epochs")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.epochs=5")
    args = parser.parse_args()
    overrides = list(args.overrides)
    if args.quick:
        args.heads, args.seeds, args.steps = ["mean", "last4_cls"], [1], 5
        overrides += ["task.max_train_samples=500", "trainer.epochs=2"]
    info = machine_info()
    cfg = compose(overrides)
    task = instantiate(cfg.task)
    tokenized = Preprocessor(load_tokenizer(cfg.model.name_or_path), task.max_length)(task.splits)
    pipeline = instantiate(cfg.pipeline)
    batches = {name: pipeline(rows, training=name == "train") for name, rows in tokenized.items()}

    fine_tuning = fine_tuning_speed(compose([*overrides, "head=pooler"]), task, batches["train"], args.warmup, args.steps)
    print(f"full fine-tuning: {fine_tuning['examples_per_second']:.1f} examples/s", flush=True)

    backbone = instantiate(cfg.model)  # frozen: experiment=feature_extraction
    started = time.perf_counter()
    splits = {name: encode_split(backbone, data, hidden_states=True, name=name) for name, data in batches.items()}
    encoding = sum(map(len, splits.values())) / (time.perf_counter() - started)
    del backbone

    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for head in args.heads:
            for seed in args.seeds:
                runs.append(train_head(cfg, task, pipeline, splits, head, seed, Path(scratch)))
                tf_keras.backend.clear_session()  # the finished run's model and datasets go
                gc.collect()
                print(runs[-1], flush=True)
                # Written after every run, so a crash loses at most the run under way.
                report = make_report(info, cfg, args, splits, fine_tuning, encoding, runs)
                write_results("feature_extraction_quick" if args.quick else "feature_extraction", report, markdown(report))


def make_report(info, cfg, args, splits, fine_tuning: dict, encoding: float, runs: list[dict]) -> dict:
    """The results so far."""
    heads = list(dict.fromkeys(row["head"] for row in runs))
    per_head = {head: statistics.mean(row["train_examples_per_second"] for row in runs if row["head"] == head)
                for head in heads}
    slowest = min(per_head, key=per_head.get)
    return {
        "machine": load_average_at_end(info),
        "command": "python bench/feature_extraction.py " + " ".join(sys.argv[1:]),
        "epochs": cfg.trainer.epochs,
        "learning_rate": cfg.optimizer.learning_rate,
        "seeds": args.seeds,
        "test_examples": len(splits["test"]),
        "speed": {
            "fine_tuning": fine_tuning,
            "encoding_examples_per_second": encoding,
            "slowest_head": slowest,
            "slowest_head_examples_per_second": per_head[slowest],
            "speedup": per_head[slowest] / fine_tuning["examples_per_second"],
        },
        "runs": runs,
        "peak_rss_mb": peak_rss_mb(),
    }


if __name__ == "__main__":
    main()
