"""WORKERS=N: local worker processes on one study, one GPU each when GPUs are visible."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


# Options that belong to the process that starts the workers, not to the workers.
NOT_PASSED = {"workers", "command", "study", "storage"}


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def worker_argv(args: argparse.Namespace) -> list[str]:
    """The flags a worker needs to run the same search as ``args``."""
    argv = []
    for name, value in sorted(vars(args).items()):
        if value is not None and name not in NOT_PASSED:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def run_local_workers(count: int, study: str, storage_url: str, argv: list[str]) -> list[str]:
    """Run ``count`` ``python -m search worker`` processes on ``study`` and wait for them.

    Worker i sees only GPU i (modulo the GPUs visible); Ctrl-C or SIGTERM here is passed on
    to every worker, which closes its running trial. Returns a line for each worker that
    did not exit cleanly.
    """
    gpus = visible_gpus()
    processes = []
    for i in range(count):
        env = {**os.environ, "STUDY": study, "STORAGE": storage_url}  # not on a command line: it may hold a password
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        processes.append(subprocess.Popen([sys.executable, "-m", "search", "worker", *argv], env=env))
    try:
        codes = [process.wait() for process in processes]
    except KeyboardInterrupt:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait()
        raise
    return [f"worker {i} exited with {code}" for i, code in enumerate(codes) if code != 0]
