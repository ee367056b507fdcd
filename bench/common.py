"""What bench/speed.py and bench/serving.py share: worker processes and machine facts.

Each framework runs in a worker process of its own (the script run again with
`--worker NAME --output FILE`), so frameworks share no threads or memory, and each
process's peak RSS is its own (Linux counts a child's peak from the parent's at the fork:
the parent, which imports no framework, holds about 20 MB).

The numbers mean something only on an otherwise idle machine: PyTorch's OpenMP threads
slow down tenfold or more when other processes compete for the cores. The results
record the load average before and after the runs.
"""

import importlib.metadata
import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TORCH_VERSION = "2.13.0"


def announce() -> str:
    """The command that started this bench script, quoted as a shell takes it; printed first
    (a results file records it)."""
    command = shlex.join(["python", f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    print(f"$ {command}", flush=True)
    return command


def require_torch(script: str) -> None:
    """Stop with the install command when PyTorch is missing."""
    try:
        importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        raise SystemExit(f"{script} compares against PyTorch: pip install torch=={TORCH_VERSION}") from None


def run_worker(script: Path, name: str, framework: str, threads: int, arguments: list[str]) -> dict:
    """Run `python script --worker name ...` in a new process; returns the JSON it wrote.

    `framework` ("tensorflow" or "pytorch") is the only one transformers may import
    there; every framework gets `threads` threads.
    """
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "result.json"
        command = [sys.executable, str(script), "--worker", name, "--output", str(output), "--threads", str(threads),
                   *arguments]
        # Both set: the parent may have imported tfbert, which sets USE_TORCH=0 for itself.
        only = {"USE_TF": "0", "USE_TORCH": "1"} if framework == "pytorch" else {"USE_TF": "1", "USE_TORCH": "0"}
        env = {**os.environ, **only, "OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
        print(f"--- {name}", flush=True)
        started = time.perf_counter()
        process = subprocess.run(command, env=env, cwd=ROOT)
        if process.returncode != 0:
            raise SystemExit(f"{script.name}: the {name} run failed (exit code {process.returncode}); see its output above")
        result = json.loads(output.read_text())
    result["process_seconds"] = round(time.perf_counter() - started, 1)
    return result


def load_tensorflow(threads: int, onednn: bool | None = None, intra_op: int | None = None):
    """TensorFlow on `threads` threads (set before its runtime starts).

    By default every op may use all of them (intra-op parallelism `threads`); with
    `intra_op`, each op uses that many and up to `threads` ops run at once (inter-op).
    `onednn` turns TensorFlow's oneDNN CPU kernels on or off (TF_ENABLE_ONEDNN_OPTS, read
    when TensorFlow loads); None leaves the environment's choice, or TensorFlow's default
    for this CPU (off without AVX-512).
    """
    if onednn is not None:
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1" if onednn else "0"
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(intra_op or threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    return tf


def onednn_enabled() -> bool:
    """Whether this process's TensorFlow runs its oneDNN CPU kernels."""
    from tensorflow.python.util import _pywrap_util_port

    return bool(_pywrap_util_port.IsMklEnabled())


def is_matmul(op_type: str) -> bool:
    """A matrix-multiplication op type: MatMul, BatchMatMulV2, Einsum, their fused and oneDNN (_Mkl...) forms."""
    return "MatMul" in op_type or "Einsum" in op_type


def profile_op_types(work) -> dict:
    """Where the time of `work()` goes: TensorFlow profiler, self-time per op type.

    Shares are of the busy time (the profiler's IDLE excluded; `idle` is its own share of
    the whole); `matmul` sums the matrix-multiplication op types.
    """
    import tensorflow as tf
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        work()
        tf.profiler.experimental.stop()
        traces = [str(path) for path in Path(logdir).rglob("*.xplane.pb")]
        table = json.loads(_pywrap_profiler_plugin.xspace_to_tools_data(traces, "framework_op_stats", {})[0])[0]
    columns = [column["id"] for column in table["cols"]]
    self_time = {}
    for row in table["rows"]:
        cells = dict(zip(columns, (cell.get("v") if cell else None for cell in row["c"])))
        self_time[cells["type"]] = self_time.get(cells["type"], 0.0) + cells["total_self_time"]
    idle = self_time.pop("IDLE", 0.0)
    busy = sum(self_time.values())
    shares = sorted(((op, time / busy) for op, time in self_time.items()), key=lambda item: -item[1])
    return {
        "busy_ms": busy / 1e3,
        "idle": idle / (idle + busy),
        "matmul": sum(time for op, time in self_time.items() if is_matmul(op)) / busy,
        "op_types": [{"type": op, "share": share} for op, share in shares[:12]],
    }


def profile_lines(profile: dict, what: str, rest: str) -> list[str]:
    """The time of `what` by op type (a profile_op_types result) as markdown; `rest` ends the first sentence."""
    lines = [
        f"Where the time of {what} goes (TensorFlow profiler; busy {profile['busy_ms']:,.0f} ms of op "
        f"self-time, idle {profile['idle']:.0%} of the threads' time): matrix multiplications take "
        f"{profile['matmul']:.0%} of the busy time; {rest}.",
        "",
        "| op type | share of busy time |",
        "|---|---|",
    ]
    return lines + [f"| {row['type']} | {row['share']:.1%} |" for row in profile["op_types"]]


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what platform knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, cores, load and package versions, for the results files."""
    versions = {
        package: installed_version(package)
        for package in ("tensorflow", "tf-keras", "tensorflow-text", "transformers", "torch")
    }
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "load_average_at_start": os.getloadavg(), **versions}


def installed_version(package: str) -> str:
    """The installed version of `package`, or "not installed" (torch is only in the bench extra)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_line(info: dict) -> str:
    """One markdown line describing the machine (and how busy it was: see load_average_at_end)."""
    start, end = (", ".join(f"{value:.2f}" for value in info[key]) for key in ("load_average_at_start", "load_average_at_end"))
    return (f"Machine: {info['cpu']}, {info['cores']} cores, load average (1, 5, 15 min) at start {start}, "
            f"at end {end}; tensorflow {info['tensorflow']}, transformers {info['transformers']}, torch {info['torch']}.")


def report_footer(report: dict) -> list[str]:
    """The closing markdown lines of a results table: the machine, then the exact command."""
    return ["", machine_line(report["machine"]), "", f"Command: `{report['command']}`"]


def mean_std(values: list[float], digits: int = 4) -> str:
    """`0.8123 ± 0.0100` over several values (sample std); just the value for one."""
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def at_least(least: int):
    """An argparse type: an integer no smaller than `least` (argparse names the flag in its error)."""
    def parse(text: str) -> int:
        value = int(text)
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse's message for a non-number: "invalid integer value: 'x'"
    return parse


def quick_banner(report: dict) -> list[str]:
    """The markdown's first lines for a --quick run, which checks the script and measures nothing."""
    return ["**QUICK run (--quick): checks that the script works; not a measurement.**", ""] if report["quick"] else []


def add_worker_arguments(parser, workers) -> None:
    """The arguments both benchmarks share: thread count, and the hidden worker-process ones."""
    parser.add_argument("--threads", type=at_least(1), default=os.cpu_count(),
                        help="threads of every framework (default: all cores)")
    parser.add_argument("--worker", choices=workers, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)


def run_if_worker(args, workers) -> bool:
    """In a worker process (`--worker NAME`): run that worker, write its JSON result, return True."""
    if not args.worker:
        return False
    args.output.write_text(json.dumps(workers[args.worker](args)))
    return True


def load_average_at_end(info: dict) -> dict:
    """`info` with the load average now, after the workers (other processes show as load above 0)."""
    return {**info, "load_average_at_end": os.getloadavg()}


def write_results(stem: str, report: dict, table: str) -> None:
    """bench/results/<stem>.json and .md; prints the table."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(table)
    print(table)
    print(f"wrote {RESULTS / stem}.json and {RESULTS / stem}.md")
