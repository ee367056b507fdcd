"""Start N multi-worker training processes on this machine, talking over 127.0.0.1.

Each worker runs the same `python train.py ...` with trainer.strategy=multi_worker and its
own TF_CONFIG (free ports chosen here); worker 0 is the chief and keeps the outputs. On
several machines, run the same command on each with a TF_CONFIG naming every machine
(README, "Scaling out"); this script is that setup on one machine, to try it out.

    python scripts/launch_local_workers.py --workers 2 -- model=tiny trainer.epochs=1

Worker i logs to <log-dir>/worker<i>/train.log; the chief writes the run to <log-dir>
unless the overrides name a run_dir. Exits 0 once every worker has; if one fails or
--timeout passes, the others are stopped.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    """`count` distinct ports on 127.0.0.1 that nothing listens on right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_tf_configs(workers: int) -> list[str]:
    """One TF_CONFIG per worker, all naming the same cluster of local addresses."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(workers)]


def launch(workers: int, overrides: list[str], log_dir: Path, timeout: float) -> int:
    """Run the workers to the end; returns 0 if all succeeded, else the first failure's exit code."""
    if workers < 1:
        raise SystemExit(f"--workers must be positive, got {workers}")
    if not any(override.startswith("run_dir=") for override in overrides):
        overrides = [*overrides, f"run_dir={log_dir}"]
    processes = []
    for index, tf_config in enumerate(worker_tf_configs(workers)):
        command = [
            sys.executable, str(ROOT / "train.py"), "trainer.strategy=multi_worker", *overrides,
            f"hydra.run.dir={log_dir / f'worker{index}'}",
        ]
        processes.append(subprocess.Popen(command, cwd=ROOT, env={**os.environ, "TF_CONFIG": tf_config}))
    deadline = time.monotonic() + timeout
    try:
        while True:
            codes = [process.poll() for process in processes]
            failed = [code for code in codes if code not in (None, 0)]
            if failed:
                print(f"launch_local_workers: a worker failed with exit code {failed[0]}; stopping the others", file=sys.stderr)
                return failed[0]
            if all(code == 0 for code in codes):
                return 0
            if time.monotonic() > deadline:
                print(f"launch_local_workers: workers still running after {timeout:g}s; stopping them", file=sys.stderr)
                return 124
            time.sleep(1)
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2, help="processes to start (default 2)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds before all are stopped (default 3600)")
    parser.add_argument(
        "--log-dir", type=Path, default=ROOT / "outputs" / "local_workers" / time.strftime("%Y-%m-%d_%H-%M-%S"),
        help="workers' logs, and the run dir unless the overrides give one",
    )
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    arguments = parser.parse_args()
    sys.exit(launch(arguments.workers, arguments.overrides, arguments.log_dir.resolve(), arguments.timeout))


if __name__ == "__main__":
    main()
