"""Compare the runs of a Hydra multirun: mean ± std of each test metric per group, and a chart.

    python train.py experiment=compare_heads       # = python train.py -m head=pooler,cls,mean,max seed=1,2,3
    python -m tfbert.compare multirun/<date>_<time>                  # groups by head
    python -m tfbert.compare multirun/<date>_<time> --by head optimizer.learning_rate

Each run dir of the sweep holds metrics.json and .hydra/overrides.yaml. Runs are grouped
by the overrides named with --by; by default, by every override whose value differs
between runs except `seed`. Writes comparison.md, comparison.csv and comparison.png
into the multirun dir (or --out).
"""

import argparse
import csv
import json
import logging
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from tfbert.atomic import atomic_file
from tfbert.figures import metric_bars_figure, png_bytes

log = logging.getLogger(__name__)

# Columns of the comparison: (name, where it is in metrics.json).
COLUMNS = (
    ("test accuracy", ("test", "accuracy")),
    ("test macro F1", ("test", "f1_macro")),
    ("test macro precision", ("test", "precision_macro")),
    ("test macro recall", ("test", "recall_macro")),
    ("test subset accuracy", ("test", "subset_accuracy")),  # multi-label tasks
    ("test micro F1", ("test", "f1_micro")),
    ("test micro precision", ("test", "precision_micro")),
    ("test micro recall", ("test", "recall_micro")),
    ("test Pearson r", ("test", "pearson")),  # regression tasks
    ("test Spearman rho", ("test", "spearman")),
    ("test MSE", ("test", "mse")),
    ("training seconds", ("train_seconds",)),
)
CHARTED = ("test accuracy", "test macro F1", "test subset accuracy", "test micro F1", "test Pearson r", "test Spearman rho")
REPEATS = ("seed",)  # overrides that repeat a configuration rather than change it
MISSING = object()  # what lookup gives where metrics.json lacks a key: not a recorded null


class NoRuns(ValueError):
    """The directory holds no finished runs to compare."""


@dataclass(frozen=True)
class Run:
    """One finished run of a sweep: its dir, command-line overrides and metrics.json."""

    path: Path
    overrides: dict[str, str]
    metrics: dict


def read_overrides(path: Path) -> dict[str, str]:
    """`.hydra/overrides.yaml` as {key: value}, e.g. {"head": "mean", "seed": "1"}."""
    parsed = OverridesParser.create().parse_overrides(yaml.safe_load(path.read_text()) or [])
    return {override.key_or_group: override.get_value_element_as_str() for override in parsed}


def job_number(name: str) -> tuple:
    """Sort key: Hydra's job number (the `<n>_` in `<n>_head=mean`), then the name."""
    number = name.split("_", 1)[0]
    return (int(number) if number.isdigit() else sys.maxsize, name)


def load_runs(multirun_dir: Path) -> list[Run]:
    """The finished runs below `multirun_dir`, in job order; unfinished ones are logged and skipped."""
    multirun_dir = Path(multirun_dir)
    if not multirun_dir.is_dir():
        raise NoRuns(f"{multirun_dir} is not a directory; expected a multirun dir such as multirun/<date>_<time>")
    runs, unfinished = [], []
    # `**`: an override holding a path (task.data_file=/a/b) puts slashes in the run dir's name.
    for overrides_file in multirun_dir.glob("**/.hydra/overrides.yaml"):
        run_dir = overrides_file.parent.parent
        metrics_file = run_dir / "metrics.json"
        if metrics_file.is_file():
            runs.append(Run(run_dir, read_overrides(overrides_file), json.loads(metrics_file.read_text())))
        else:
            unfinished.append(str(run_dir.relative_to(multirun_dir)))
    if unfinished:
        log.warning("skipped %d runs without metrics.json (failed or still running): %s",
                    len(unfinished), ", ".join(sorted(unfinished)))
    if not runs:
        raise NoRuns(
            f"no finished runs in {multirun_dir}: expected subdirectories like 0_head=pooler,seed=1/ "
            "each holding metrics.json and .hydra/overrides.yaml, as "
            "`python train.py -m head=pooler,cls,mean,max seed=1,2,3` writes them"
        )
    return sorted(runs, key=lambda run: job_number(str(run.path.relative_to(multirun_dir))))


def varying_overrides(runs: list[Run]) -> list[str]:
    """Override keys whose value differs between runs, except the repeats (seed), in first-seen order."""
    keys = dict.fromkeys(key for run in runs for key in run.overrides)
    return [
        key for key in keys
        if key not in REPEATS and len({run.overrides.get(key) for run in runs}) > 1
    ]


@dataclass(frozen=True)
class Score:
    """A column's summary over a group: the mean and sample std (None for one run) of the
    `runs` runs where the score is defined, out of the group's `of` runs."""

    mean: float
    std: float | None
    runs: int
    of: int


def summarize(runs: list[Run], by: list[str]) -> list[dict]:
    """One row per group of runs: the `by` values, the run count, and a Score per column.

    A column is left out where no run has its value; a group where some run lacks it (a
    regression task among classifiers: no accuracy; train_seconds from before it was
    recorded) gets None for it. A score a run holds as undefined (null in metrics.json: a
    correlation of constant predictions) is left out of its group's mean, which the Score's
    `runs` counts; a group where every run's is undefined gets None.
    """
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(run.overrides.get(key, "") for key in by), []).append(run)
    columns = [(name, path) for name, path in COLUMNS if any(lookup(run.metrics, path) is not None for run in runs)]
    rows = []
    for values, members in groups.items():
        row = {**dict(zip(by, values)), "runs": len(members)}
        for name, path in columns:
            recorded = [lookup(run.metrics, path, MISSING) for run in members]
            scores = [score for score in recorded if score is not None]
            if MISSING in recorded or not scores:
                row[name] = None
            else:
                std = statistics.stdev(scores) if len(scores) > 1 else None
                row[name] = Score(statistics.mean(scores), std, len(scores), len(members))
        rows.append(row)
    return rows


def lookup(metrics: dict, path: tuple, default=None):
    """metrics[path[0]][path[1]]..., or `default` where a key is missing."""
    for key in path:
        if not isinstance(metrics, dict) or key not in metrics:
            return default
        metrics = metrics[key]
    return metrics


def markdown_table(rows: list[dict], by: list[str]) -> str:
    """`| head | runs | test accuracy | ... |` with `mean ± std` cells; a mean over fewer than
    all of a group's runs says over how many, and a line under the table says why."""
    names = list(rows[0])
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for row in rows:
        cells = [str(row[name]) if name in by or name == "runs" else mean_std(row[name], name) if row[name] else "–"
                 for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    partial = any(isinstance(score, Score) and score.runs < score.of for row in rows for score in row.values())
    if partial:
        lines += ["", "(k of n): the mean of the k runs whose score is defined; a correlation is undefined for "
                  "a run whose test predictions were all the same."]
    return "\n".join(lines) + "\n"


def mean_std(score: Score, column: str) -> str:
    """`0.8123 ± 0.0100` (seconds to 1 decimal); just the mean for a single run; `(2 of 3)`
    after it where the group's other runs have no such score."""
    digits = 1 if column == "training seconds" else 4
    text = f"{score.mean:.{digits}f}" if score.std is None else f"{score.mean:.{digits}f} ± {score.std:.{digits}f}"
    return text if score.runs == score.of else f"{text} ({score.runs} of {score.of})"


def write_csv(rows: list[dict], by: list[str], path: Path) -> None:
    """A column per `by` key, `runs`, then `<column> mean`, `<column> std` (empty for one
    run) and `<column> runs` (the runs the mean is over: fewer than `runs` where some
    runs' score is undefined)."""
    scored = [name for name in rows[0] if name not in by and name != "runs"]
    with atomic_file(path, newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*by, "runs", *(f"{name} {stat}" for name in scored for stat in ("mean", "std", "runs"))])
        for row in rows:
            stats = [value for name in scored
                     for value in ((row[name].mean, row[name].std, row[name].runs) if row[name] else (None, None, None))]
            writer.writerow([*(row[key] for key in by), row["runs"], *("" if value is None else value for value in stats)])


def write_chart(rows: list[dict], by: list[str], path: Path) -> None:
    """Bars of the charted test metrics (and training time) per group, ±std error bars."""
    labels = [",".join(str(row[key]) for key in by) for row in rows]

    def series(name):  # a group without the column: no bar (NaN)
        scores = [row[name] for row in rows]
        return ([score.mean if score else math.nan for score in scores],
                [(score.std or 0.0) if score else 0.0 for score in scores])

    metrics = {name: series(name) for name in CHARTED if name in rows[0]}
    time = series("training seconds") if "training seconds" in rows[0] else None
    path.write_bytes(png_bytes(metric_bars_figure(labels, metrics, time)))


def compare(multirun_dir: Path, by: list[str] | None = None, out_dir: Path | None = None) -> dict[str, Path]:
    """Write comparison.md, comparison.csv and comparison.png; returns their paths by format."""
    runs = load_runs(multirun_dir)
    by = by or varying_overrides(runs)
    if len(runs) == 1:
        raise NoRuns(f"{multirun_dir} holds one run ({runs[0].path}); compare takes the dir of a sweep "
                     "(python train.py -m ...), whose runs it groups")
    if not by:
        raise NoRuns(
            f"the {len(runs)} runs in {multirun_dir} differ only in {', '.join(REPEATS)}: "
            "nothing to group by; name the overrides to group by with --by"
        )
    unknown = [key for key in by if not any(key in run.overrides for run in runs)]
    if unknown:
        found = sorted({key for run in runs for key in run.overrides})
        raise NoRuns(f"no run in {multirun_dir} overrides {', '.join(unknown)}; overrides found: {', '.join(found)}")
    rows = summarize(runs, by)
    out_dir = Path(out_dir or multirun_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"comparison.{kind}" for kind in ("md", "csv", "png")}
    with atomic_file(paths["md"]) as file:
        file.write(markdown_table(rows, by))
    write_csv(rows, by, paths["csv"])
    write_chart(rows, by, paths["png"])
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tfbert.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("multirun_dir", type=Path, help="a Hydra sweep dir, e.g. multirun/2026-01-01_12-00-00")
    parser.add_argument("--by", nargs="+", help="overrides to group runs by (default: those that differ, but seed)")
    parser.add_argument("--out", type=Path, help="where to write the comparison (default: the multirun dir)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        paths = compare(args.multirun_dir, args.by, args.out)
    except NoRuns as error:
        parser.exit(2, f"error: {error}\n")
    print(paths["md"].read_text())
    print("\n".join(f"wrote {path}" for path in paths.values()))


if __name__ == "__main__":
    main()
