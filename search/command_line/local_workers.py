"""WORKERS=N: local worker processes on one study, one GPU each when GPUs are visible."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from imgsearch.records import LOCAL_WORKER
from imgsearch.settings import SETTINGS, Settings
from imgsearch.storage.errors import UserError
from imgsearch.storage.machine import GIB, available_memory, die_with_parent

# Set in a local worker's environment: its number.
# Options that belong to the process that starts the workers, not to the workers.
NOT_PASSED = {"workers", "study", "storage"}
# What one worker process needs at least: TensorFlow, a model, the dataset's pages.
WORKER_MEMORY = 1 * GIB
# Processes a core can usefully share: the trials wait on the database and MLflow at times.
WORKERS_PER_CORE = 4


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


def check_worker_count(count: int) -> None:
    """UserError when this machine cannot run ``count`` workers: more than WORKERS_PER_CORE
    a core, or more than its available memory holds at WORKER_MEMORY each."""
    cores = os.cpu_count() or 1
    by_memory = max(1, available_memory() // WORKER_MEMORY)
    most = min(WORKERS_PER_CORE * cores, by_memory)
    if count > most:
        raise UserError(f"WORKERS={count}: this machine can run at most {most} ({cores} cores, "
                        f"{available_memory() / GIB:.1f} GiB available, about {WORKER_MEMORY // GIB} GiB a worker); "
                        f"set WORKERS={most} or fewer, and add workers on other machines with `make worker`")


def worker_environment(args: Settings) -> dict[str, str]:
    """The variables a worker needs to run the same search as ``args``: every setting goes
    through the environment, never a command line, which ``ps`` shows to every user of the
    machine (a database or tracking URL may hold a password)."""
    env = {s.env: str(getattr(args, s.name)) for s in SETTINGS
           if getattr(args, s.name, None) is not None and s.name not in NOT_PASSED}
    return {**{s.env: "" for s in SETTINGS}, **env}  # one given as a flag here overrides the variable


def run_local_workers(count: int, study: str, storage_url: str, settings_env: dict[str, str]) -> list[str]:
    """Run ``count`` ``python -m imgsearch worker`` processes on ``study`` and wait for them.

    Worker i sees only GPU i (modulo the GPUs visible); Ctrl-C or SIGTERM here is passed on
    to every worker, which closes its running trial, and the kernel sends them SIGTERM
    should this process die without a word (kill -9). Returns a line for each worker that
    did not exit cleanly.
    """
    gpus = visible_gpus()
    parent = os.getpid()
    processes = []
    for i in range(count):
        env = {**os.environ, **settings_env, "STUDY": study, "STORAGE": storage_url, LOCAL_WORKER: str(i)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        processes.append(subprocess.Popen([sys.executable, "-m", "imgsearch", "worker"], env=env,
                                          preexec_fn=lambda: die_with_parent(parent, signal.SIGTERM)))
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
