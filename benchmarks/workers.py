"""Benchmark (not a test): trials per second with 1, 2, 4 and 8 worker processes on one study.

The objective sleeps 1 second, so N workers ideally finish N trials a second; the figure is
the measured rate as a fraction of that. Each worker opens the storage the way a search does
(``storage.optuna_storage.open_storage``, heartbeat on) and reaches the target the way our workers do
(``search.trials.trial_target``: claim each trial, stop at the target; trials past it are surplus). Storages: the PostgreSQL server at 127.0.0.1:5432 (database ``test``) and the
local default, a SQLite file. Errors (e.g. SQLite's "database is locked") are counted.

Run: .venv/bin/python benchmarks/workers.py [--per-worker 8] [--postgres postgresql://...]
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path

import optuna

from imgsearch.trials.trial_target import StopAtTarget, claim, finished_count
from imgsearch.storage.optuna_storage import open_storage
from imgsearch.storage.urls import default_storage_url

SLEEP_S = 1.0


def _worker(url: str, study_name: str, total: int, barrier, errors) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = open_storage(url, heartbeat=10)
    study = optuna.load_study(study_name=study_name, storage=storage)

    def objective(trial: optuna.Trial) -> float:
        claim(trial, total)
        x = trial.suggest_float("x", -1, 1)
        time.sleep(SLEEP_S)
        return x * x

    barrier.wait()
    try:
        study.optimize(objective, callbacks=[StopAtTarget(total)])
    except Exception as exc:  # counted, not hidden: a lock error ends this worker
        with errors.get_lock():
            errors.value += 1
        print(f"  worker error: {type(exc).__name__}: {str(exc).splitlines()[0]}", flush=True)


def measure(url: str, workers: int, per_worker: int) -> tuple[float, int, int, int]:
    """(seconds, counted trials, surplus trials, errors) for ``workers`` processes on a new study at ``url``."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    optuna.create_study(study_name=name, storage=open_storage(url))
    total = workers * per_worker
    context = multiprocessing.get_context("spawn")
    barrier, errors = context.Barrier(workers + 1), context.Value("i", 0)
    processes = [context.Process(target=_worker, args=(url, name, total, barrier, errors)) for _ in range(workers)]
    for process in processes:
        process.start()
    barrier.wait()
    started = time.perf_counter()
    for process in processes:
        process.join()
    seconds = time.perf_counter() - started
    study = optuna.load_study(study_name=name, storage=open_storage(url))
    complete = finished_count(study)
    surplus = len(study.trials) - complete
    optuna.delete_study(study_name=name, storage=open_storage(url))
    return seconds, complete, surplus, errors.value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-worker", type=int, default=8, help="trials per worker")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        storages = {"PostgreSQL": args.postgres, "SQLite (default)": default_storage_url(Path(tmp) / "optuna.db")}
        print(f"objective: sleep {SLEEP_S:g} s; {args.per_worker} trials per worker; "
              f"{multiprocessing.cpu_count()} cores\n")
        print("| storage | workers | trials | surplus | seconds | trials/s | fraction of ideal | errors |")
        print("|---|---|---|---|---|---|---|---|")
        for label, url in storages.items():
            for workers in (1, 2, 4, 8):
                seconds, complete, surplus, errors = measure(url, workers, args.per_worker)
                rate = complete / seconds
                print(f"| {label} | {workers} | {complete} | {surplus} | {seconds:.1f} | {rate:.2f} | "
                      f"{rate / (workers / SLEEP_S):.2f} | {errors} |", flush=True)


if __name__ == "__main__":
    main()
