"""How soon ``make dashboard`` and ``make mlflow`` answer, against the bare servers on the same stores.

Each server is started 3 times in a fresh process on a free port, and timed from its start to
its first HTTP answer on ``/`` (the dashboard) or ``/health`` (MLflow); ours are ``python -m
imgsearch dashboard|mlflow`` on a RUNS_DIR, the bare ones ``optuna-dashboard <db>`` and ``mlflow
server --backend-store-uri <db>`` (MLflow's defaults, and with ``--workers 1`` as ours runs it).
The RUNS_DIR is made by a digits search of 2 one-epoch trials first (not timed)::

    .venv/bin/python benchmarks/dashboards.py [--runs-dir DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seconds_to_answer(command: list[str], url: str, env: dict) -> float:
    began = time.perf_counter()
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"{command[:3]} exited with {server.returncode}")
            try:
                urllib.request.urlopen(url, timeout=2).close()
                return time.perf_counter() - began
            except OSError:
                time.sleep(0.05)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", help="a RUNS_DIR to serve (default: one made by a small digits search)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    scratch = tempfile.TemporaryDirectory()
    runs = Path(args.runs_dir or Path(scratch.name) / "runs")
    env = {**os.environ, "RUNS_DIR": str(runs), "DATA_DIR": str(Path(scratch.name) / "data")}
    if not args.runs_dir:
        subprocess.run([sys.executable, "-m", "imgsearch", "search", "--dataset", "digits", "--space", "mlp",
                        "--trials", "2", "--epochs", "1"], env=env, check=True, capture_output=True)
    study_db, mlflow_db = f"sqlite:///{runs / 'optuna.db'}", f"sqlite:///{runs / 'mlflow.db'}"

    def cases(port: int):
        root, health = f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{port}/health"
        ours = {**env, "DASHBOARD_PORT": str(port), "MLFLOW_PORT": str(port)}
        return [
            ("make dashboard (python -m imgsearch dashboard)", [sys.executable, "-m", "imgsearch", "dashboard"],
             root, ours),
            ("bare optuna-dashboard", [str(BIN / "optuna-dashboard"), "--port", str(port), study_db], root, env),
            ("make mlflow (python -m imgsearch mlflow)", [sys.executable, "-m", "imgsearch", "mlflow"], health, ours),
            ("bare mlflow server, its defaults", [str(BIN / "mlflow"), "server", "--port", str(port),
                                                 "--backend-store-uri", mlflow_db], health, env),
            ("bare mlflow server --workers 1", [str(BIN / "mlflow"), "server", "--port", str(port), "--workers", "1",
                                                "--backend-store-uri", mlflow_db], health, env),
        ]

    print(f"seconds from start to the first HTTP answer, median of {args.repeats} (min-max):")
    for index in range(len(cases(0))):
        times = []
        for _ in range(args.repeats):
            name, command, url, case_env = cases(free_port())[index]
            times.append(seconds_to_answer(command, url, case_env))
        print(f"  {name:<48} {statistics.median(times):6.2f} s  ({min(times):.2f}-{max(times):.2f})", flush=True)


if __name__ == "__main__":
    main()
