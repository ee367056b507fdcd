"""Test accuracy and wall time of the default run for each head.

Runs `python train.py task=sentiment head=<head> seed=<seed>` as separate processes, one
after the other (the exact command a user types), and writes
bench/results/heads.json and bench/results/heads.md.

    python bench/heads.py                      # pooler, cls, mean, max; seed 42
    python bench/heads.py --heads pooler mean --seeds 1 2 3 -- trainer.epochs=2
"""

import argparse
import json
import subprocess
import sys
import time

from common import ROOT, load_average_at_end, machine_info, mean_std, report_footer, write_results


def run_one(head: str, seed: int, overrides: list[str]) -> dict:
    run_dir = ROOT / "outputs" / "bench_heads" / f"{head}_seed{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, "train.py", "task=sentiment", f"head={head}", f"seed={seed}",
               f"hydra.run.dir={run_dir}", *overrides]
    print("$", " ".join(command[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    seconds = time.perf_counter() - start
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "head": head,
        "seed": seed,
        "wall_seconds": round(seconds, 1),
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1_macro": metrics["test"]["f1_macro"],
        "validation_accuracy": metrics["validation"]["accuracy"],
        "train_padding_efficiency": metrics["train_padding_efficiency"],
        "command": "python " + " ".join(command[1:5] + overrides),
    }


def markdown(report: dict) -> str:
    rows = report["runs"]
    lines = [
        "| head | seeds | test accuracy | test macro F1 | wall time (min) |",
        "|---|---|---|---|---|",
    ]
    for head in dict.fromkeys(row["head"] for row in rows):
        mine = [row for row in rows if row["head"] == head]
        lines.append(
            f"| {head} | {len(mine)} | {mean_std([row['test_accuracy'] for row in mine])} "
            f"| {mean_std([row['test_f1_macro'] for row in mine])} "
            f"| {mean_std([row['wall_seconds'] / 60 for row in mine], digits=1)} |"
        )
    lines += ["", "Wall time: the whole `python train.py` process (data, training, evaluation, export).",
              *report_footer(report)]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=["pooler", "cls", "mean", "max"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--name", default="heads", help="results file stem")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()
    info = machine_info()
    rows = []
    for head in args.heads:
        for seed in args.seeds:
            rows.append(run_one(head, seed, args.overrides))
            report = {"machine": load_average_at_end(info), "command": "python bench/heads.py " + " ".join(sys.argv[1:]),
                      "runs": rows}
            write_results(args.name, report, markdown(report))  # after every run: nothing lost if stopped


if __name__ == "__main__":
    main()
