"""Training speed of tfbert settings side by side, in one process: which runs fastest here.

    python bench/variants.py "batch 32:" "batch 64: pipeline.batch_size=64"
    python bench/variants.py base: "xla: trainer.jit_compile=true" --steps 24 --rounds 7

Each variant is `NAME: OVERRIDE OVERRIDE ...`: Hydra overrides of conf/, as train.py takes
them (`NAME:` alone is the default run). Every variant is built in this process, each on
the first --steps batches of its own training stream (cached), and fitted once untimed
(tracing, and XLA's compiling with trainer.jit_compile). Then --rounds rounds each fit
every variant once over its batches, variant after variant, timed from the end of its
first step (bench/speed.py's fit_timed).

Shared machines drift: the same step can run 20% slower a few minutes later. A variant's
ratio to the first one is therefore taken within each round, and the median over rounds
reported, with its median real tokens/s and the GFLOP/s it performed (bench/speed.py's
FLOPs count, padded positions included). Variants that change the batch size or the
padding are compared by tokens, not steps.

Per-process settings (threads: --threads; TF_ENABLE_ONEDNN_OPTS) are the same for every
variant; trainer.precision is per model and may differ. Writes
bench/results/variants.{json,md}.
"""

import argparse
import os
import statistics

from common import announce, at_least, load_average_at_end, load_tensorflow, machine_info, report_footer, write_results
from speed import fit_timed, tfbert_training


def parse_variant(spec: str) -> tuple[str, list[str]]:
    """`NAME: OVERRIDE ...` as (name, overrides); ValueError says what is expected."""
    name, colon, overrides = spec.partition(":")
    if not colon or not name.strip():
        raise ValueError(
            f"variant {spec!r}: expected NAME: OVERRIDE ..., e.g. 'xla: trainer.jit_compile=true' "
            "(or 'base:' for the default run)"
        )
    return name.strip(), overrides.split()


def time_variants(variants: list[tuple[str, list[str]]], steps: int, rounds: int) -> dict:
    """Build every variant, then time `rounds` interleaved rounds; the per-variant summary."""
    runs = {}
    for name, overrides in variants:
        print(f"building {name} ({' '.join(overrides) or 'the default run'})", flush=True)
        run = tfbert_training(overrides, steps + 1)
        run.model.fit(run.data, verbose=0, **run.fit_args)  # tracing and compiling, untimed
        runs[name] = run
    timings = {name: [] for name in runs}
    for round_ in range(rounds):
        for name, run in runs.items():
            timings[name].append(fit_timed(run.model, run.data, steps, 1, run.counter(), **run.fit_args))
        print(f"round {round_ + 1}/{rounds}: " + ", ".join(
            f"{name} {timing[-1]['real_tokens'] / timing[-1]['seconds']:,.0f} real tokens/s"
            for name, timing in timings.items()), flush=True)

    first = next(iter(timings.values()))
    summary = {}
    for (name, overrides), timing in zip(variants, timings.values()):
        tokens_per_second = [t["real_tokens"] / t["seconds"] for t in timing]
        ratios = [mine / (base["real_tokens"] / base["seconds"]) for mine, base in zip(tokens_per_second, first)]
        summary[name] = {
            "overrides": overrides,
            "real_tokens_per_second": statistics.median(tokens_per_second),
            "performed_gflops_per_second": statistics.median(t["performed_flops"] / t["seconds"] / 1e9 for t in timing),
            "padding_efficiency": timing[0]["real_tokens"] / timing[0]["padded_tokens"],
            "ms_per_step": statistics.median(1e3 * t["seconds"] / t["timed_steps"] for t in timing),
            "ratio_to_first": statistics.median(ratios),
            "real_tokens_per_second_by_round": tokens_per_second,
            "timed_steps": timing[0]["timed_steps"],  # fewer than asked where executions run several steps
        }
    return summary


def markdown(report: dict) -> str:
    variants = report["variants"]
    first = next(iter(variants))
    lines = [
        f"tfbert training speed by settings, in one process: {report['steps']} timed steps per variant and "
        f"round, {report['rounds']} rounds, {report['threads']} threads; medians over the rounds, the ratio "
        f"to `{first}` taken within each round.",
        "",
        "| variant | overrides | real tokens/s | ratio | GFLOP/s performed | padding efficiency | ms/step |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in variants.items():
        overrides = " ".join(row["overrides"]) or "(default run)"
        lines.append(
            f"| {name} | `{overrides}` | {row['real_tokens_per_second']:,.0f} | {row['ratio_to_first']:.3f} | "
            f"{row['performed_gflops_per_second']:.1f} | {row['padding_efficiency']:.3f} | {row['ms_per_step']:.0f} |"
        )
    fewer = {name: row["timed_steps"] for name, row in variants.items()
             if row.get("timed_steps", report["steps"]) != report["steps"]}
    if fewer:  # trainer.steps_per_execution: timing starts and ends at an execution's end
        lines += ["", "Timed steps where executions of several steps timed fewer: " + ", ".join(
            f"{name} {steps}" for name, steps in fewer.items()) + "."]
    lines.append("")
    lines.append("Real tokens/s by round: " + "; ".join(
        f"{name} " + ", ".join(f"{value:,.0f}" for value in row["real_tokens_per_second_by_round"])
        for name, row in variants.items()) + ".")
    return "\n".join(lines + report_footer(report)) + "\n"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", help="NAME: OVERRIDE ... (quote each); the first is the baseline")
    parser.add_argument("--steps", type=at_least(1), default=16, help="timed steps per variant and round (default 16)")
    parser.add_argument("--rounds", type=at_least(1), default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--threads", type=at_least(1), default=os.cpu_count(), help="TensorFlow threads (default: all cores)")
    args = parser.parse_args(argv)
    try:
        args.variants = [parse_variant(spec) for spec in args.variants]
    except ValueError as error:
        parser.error(str(error))
    names = [name for name, _ in args.variants]
    if len(set(names)) != len(names):
        parser.error(f"variant names must differ, got {names}")
    return args


def main():
    args = parse_args()
    command = announce()
    info = machine_info()
    import tfbert  # noqa: F401  (tfbert's environment before TensorFlow loads)

    load_tensorflow(args.threads)
    variants = time_variants(args.variants, args.steps, args.rounds)
    report = {"command": command, "steps": args.steps, "rounds": args.rounds, "threads": args.threads,
              "machine": load_average_at_end(info), "variants": variants}
    write_results("variants", report, markdown(report))


if __name__ == "__main__":
    main()
