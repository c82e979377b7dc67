"""Benchmark (not a test): prints the figures quoted in the README.

1. per-trial orchestration overhead of our search, built as the search command builds it (Optuna
   + SQLite + MLflow child run, per-epoch metrics, the dashboard's note and artifacts,
   checkpoint, progress lines, Keras session clearing) against bare
   Optuna running the same training on the same kind of storage;
2. resident memory after trial 3 vs trial 30 in one process: 30 sampled cnn trials through our
   objective, then 30 identical mlp trials through it and through a bare Keras loop (build, fit,
   clear_session) in the same process, so growth that is Keras's own shows in both.

Run: `make bench` (or .venv/bin/python benchmarks/overhead.py [--trials N]); the dataset
preparation figures are benchmarks/prepare.py's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import shutil
import tempfile
import time
from pathlib import Path

import keras
import optuna
import psutil

from imgsearch.command_line.commands import prepare
from imgsearch.datasets import DatasetSpec
from imgsearch.settings import resolve
from imgsearch.storage.urls import default_storage_url
from imgsearch.trials.study import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
FIXED = {"layers": 1, "units": 64, "activation": "relu", "batch_norm": False, "dropout": 0.0, "optimizer": "adam",
         "learning_rate": 1e-3, "weight_decay": 1e-6, "label_smoothing": 0.0, "batch_size": 128}
SETTINGS = {"dataset": "digits", "image_size": None, "labels": "fine", "folder": None, "space": "mlp",
            "epochs": 2, "sampler": "tpe", "pruner": "none", "seed": 0}


def ours(root: Path, data, space_name: str, n_trials: int, params: dict | None, on_trial=None) -> float:
    """Seconds for n_trials of a search built as the search command builds it (``prepare``), on a
    fresh SQLite study + MLflow store: ``params`` each time, or sampled when None."""
    args = resolve({"runs_dir": str(root), "space": space_name, "epochs": SETTINGS["epochs"], "pruner": "none",
                    "seed": 0, "trials": n_trials, "trials_per_process": 0, "study": "bench"})
    prepared = prepare(args, creating=True, data=data, first_trials=[params] * n_trials if params else [])
    search = prepared.search()
    if on_trial is not None:
        search.callbacks.append(on_trial)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # its progress lines, measured but not shown
        search.run()
    return time.perf_counter() - started


def bare(root: Path, data, n_trials: int, params: dict) -> float:
    """Seconds for the same training with nothing but Optuna (report per epoch) on SQLite."""
    root.mkdir(parents=True)
    study = optuna.create_study(storage=default_storage_url(root / "bare.db"), direction="maximize")
    space = get_space("mlp")

    def objective(trial):
        candidate = space.build(trial, data.image_shape, data.num_classes)
        history = candidate.model.fit(data.x_train, data.y_train, batch_size=candidate.batch_size,
                                      epochs=SETTINGS["epochs"], validation_data=(data.x_val, data.y_val), verbose=0)
        for step, value in enumerate(history.history["val_accuracy"]):
            trial.report(value, step)
        return max(history.history["val_accuracy"])

    for _ in range(n_trials):
        study.enqueue_trial(params)
    started = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - started


def bare_keras(data, n_trials: int, params: dict, on_trial) -> None:
    """The same mlp built and fitted n_trials times with nothing else: no Optuna, no MLflow."""
    space = get_space("mlp")
    for _ in range(n_trials):
        candidate = space.build(optuna.trial.FixedTrial(params), data.image_shape, data.num_classes)
        candidate.model.fit(data.x_train, data.y_train, batch_size=candidate.batch_size, epochs=SETTINGS["epochs"],
                            validation_data=(data.x_val, data.y_val), verbose=0)
        del candidate
        keras.backend.clear_session()
        on_trial()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials for the overhead comparison")
    parser.add_argument("--memory-trials", type=int, default=30)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))
    try:
        data = DatasetSpec("digits").load(tmp / "data")
        print(f"keras {keras.__version__} ({keras.backend.backend()}), optuna {optuna.__version__}, "
              f"{psutil.cpu_count()} cores", flush=True)

        # One trial of each first, so that neither side's figure holds first-use costs (TensorFlow's
        # and each library's first call); ours is printed: a search process pays it once.
        bare(tmp / "warm", data, 1, FIXED)
        t_first = ours(tmp / "warm-ours", data, "mlp", 1, FIXED) - bare(tmp / "warm-again", data, 1, FIXED)
        t_bare = bare(tmp / "bare", data, args.trials, FIXED)
        t_ours = ours(tmp / "ours", data, "mlp", args.trials, FIXED)
        per_bare, per_ours = t_bare / args.trials, t_ours / args.trials
        print(f"\n1. orchestration overhead, {args.trials} identical trials (mlp on digits, 2 epochs each), SQLite:")
        print(f"   bare Optuna       {per_bare * 1000:8.0f} ms/trial")
        print(f"   ours (+MLflow)    {per_ours * 1000:8.0f} ms/trial")
        print(f"   overhead          {(per_ours - per_bare) * 1000:8.0f} ms/trial ({per_ours / per_bare:.2f}x)")
        print(f"   a process's first trial: {t_first * 1000:.0f} ms more than a bare one (one-time imports)",
              flush=True)

        process = psutil.Process()

        def measure(what: str, run) -> None:
            rss = []

            def record(*_):
                gc.collect()
                rss.append(process.memory_info().rss / 2**20)

            run(record)
            print(f"   {what:30} RSS after trial 3 {rss[2]:6.0f} MiB, after trial {len(rss)} {rss[-1]:6.0f} MiB "
                  f"({(rss[-1] - rss[2]) / (len(rss) - 3):+.1f} MiB a trial, {rss[-1] / rss[2]:.2f}x)", flush=True)

        n = args.memory_trials
        print(f"\n2. memory in one process, {n} trials each on digits (2 epochs each):")
        measure("ours, sampled cnn trials", lambda record: ours(tmp / "memory", data, "cnn", n, None, record))
        measure("ours, one mlp repeated", lambda record: ours(tmp / "memory-mlp", data, "mlp", n, FIXED, record))
        measure("bare Keras, one mlp repeated", lambda record: bare_keras(data, n, FIXED, record))

    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
