"""Benchmark (not a test): a trial's training throughput on 100,000 images against a bare
``keras.Model.fit`` of the same model on the same arrays, and its memory across epochs.

Both sides train the cnn space's first starting point (plain, 32 filters, batch 128, flips and
shifts) at 32 px for the same epochs, validating on the same 5,000 images each epoch, in one
process: ours as the search command builds a trial (``prepare``, then ``Search.run()``: the
uint8 arrays, the Optuna and MLflow callbacks, the best-weights copy, the checkpoint), the
bare side ``model.fit`` alone. The images are the 100-class Tiny ImageNet set's, repeated to
100,000 (random uint8 images when ../shared is absent: throughput does not depend on them).
Memory is the process's resident set at the end of each of ours's epochs.

Run: `make bench` (or .venv/bin/python benchmarks/throughput.py [--images N] [--epochs N]).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import optuna
import psutil

from imgsearch.command_line.commands import prepare
from imgsearch.datasets import Dataset, DatasetSpec
from imgsearch.settings import resolve
from imgsearch.trials.study import get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)
SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny-imagenet-100.zip"
VALIDATION = 5_000
EPOCH_LINE = re.compile(r"\bepoch \d+/\d+")  # the line a trial prints as each epoch ends


def images(count: int, data_dir: Path) -> tuple[Dataset, str]:
    """``count`` training and VALIDATION validation images at 32 px, and where they came from
    (``data_dir``: where the 100-class set's decoded cache is kept)."""
    if SHARED.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        if not (data_dir / "tiny-imagenet-200.zip").exists():
            (data_dir / "tiny-imagenet-200.zip").symlink_to(SHARED)
        real = DatasetSpec("tinyimagenet", image_size=32).load(data_dir)
        rows = np.arange(count) % len(real.y_train)
        x, y = np.asarray(real.x_train)[rows], np.asarray(real.y_train)[rows]
        x_val, y_val, names, origin = real.x_val, real.y_val, real.class_names, f"{SHARED.name}, repeated"
    else:
        rng = np.random.default_rng(0)
        x, y = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8), rng.integers(0, 100, count)
        x_val, y_val = x[:VALIDATION], y[:VALIDATION]
        names, origin = [f"c{i}" for i in range(100)], "random uint8 (../shared is absent)"
    data = Dataset("arrays", names, x, y, np.asarray(x_val), np.asarray(y_val), np.asarray(x_val), np.asarray(y_val),
                   fingerprint=f"throughput-{count}")
    return data, origin


class EpochMemory(io.StringIO):
    """Our search's stdout: the time and the resident set when each epoch line is written (at the
    epoch's end)."""

    def __init__(self):
        super().__init__()
        self.rss, self.ends = [], []

    def write(self, text: str) -> int:
        if EPOCH_LINE.search(text):
            self.ends.append(time.perf_counter())
            self.rss.append(psutil.Process().memory_info().rss / 2**20)
        return super().write(text)


class EpochEnds(keras.callbacks.Callback):
    """The bare fit's epoch end times."""

    def __init__(self):
        super().__init__()
        self.ends = []

    def on_epoch_end(self, epoch, logs=None):
        self.ends.append(time.perf_counter())


def ours(work: Path, data: Dataset, params: dict, epochs: int) -> tuple[float, list[float], list[float]]:
    """Seconds for one trial of ``params`` through the search, the seconds of its epochs after the
    first, and the RSS (MiB) after each epoch."""
    args = resolve({"runs_dir": str(work / "runs"), "space": "cnn", "epochs": epochs, "pruner": "none", "seed": 0,
                    "trials": 1, "trials_per_process": 0, "study": "throughput", "explore_images": 0})
    prepared = prepare(args, creating=True, data=data, first_trials=[params])
    search = prepared.search()
    out = EpochMemory()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out):
        search.run()
    seconds = time.perf_counter() - started
    trial = prepared.study.trials[0]
    assert trial.state.name == "COMPLETE", (trial.state, trial.user_attrs, out.getvalue()[-2000:])
    return seconds, [b - a for a, b in zip(out.ends, out.ends[1:])], out.rss


def bare(data: Dataset, params: dict, epochs: int) -> tuple[float, list[float]]:
    """Seconds for the same model's ``fit`` on the same arrays, nothing else, and the seconds of
    its epochs after the first."""
    candidate = get_space("cnn").build(optuna.trial.FixedTrial(params), data.image_shape, data.num_classes)
    ends = EpochEnds()
    started = time.perf_counter()
    candidate.model.fit(data.x_train, data.y_train, batch_size=candidate.batch_size, epochs=epochs,
                        validation_data=(data.x_val, data.y_val), verbose=0, callbacks=[ends])
    seconds = time.perf_counter() - started
    keras.backend.clear_session()
    return seconds, [b - a for a, b in zip(ends.ends, ends.ends[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, help="where the 100-class set is decoded once and kept "
                        "(default: a temporary folder, decoded each run)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="throughput-"))
    try:
        data, origin = images(args.images, args.data_dir or work / "data")
        params = get_space("cnn").initial_params(data.image_shape)[0]
        print(f"\n3. training throughput, {args.images:,} images at 32 px ({origin}), the cnn space's first "
              f"starting point, {args.epochs} epochs each, validation on {len(data.y_val):,} images every epoch:",
              flush=True)
        bare(dataclasses.replace(data, x_train=data.x_train[:2_000], y_train=data.y_train[:2_000]), params, 1)
        # (TensorFlow's first fit, above, is counted on neither side)
        t_bare, epochs_bare = bare(data, params, args.epochs)
        t_ours, epochs_ours, rss = ours(work, data, params, args.epochs)
        rate = args.images * args.epochs
        steady_bare, steady_ours = statistics.median(epochs_bare), statistics.median(epochs_ours)
        print(f"   bare keras fit   {rate / t_bare:7.0f} images/s ({t_bare:.0f} s); epochs after the first "
              f"{args.images / steady_bare:.0f} images/s ({steady_bare:.1f} s each, median)")
        print(f"   ours, one trial  {rate / t_ours:7.0f} images/s ({t_ours:.0f} s, the trial's start and end included); "
              f"epochs after the first {args.images / steady_ours:.0f} images/s ({steady_ours:.1f} s each, median)")
        print(f"   ratio            {t_bare / t_ours:7.2f} of the bare fit's throughput for the whole trial, "
              f"{steady_bare / steady_ours:.2f} epoch for epoch")
        print("   ours, resident memory at each epoch's end: " + ", ".join(f"{r:.0f}" for r in rss)
              + f" MiB ({rss[-1] - rss[0]:+.0f} MiB from the first to the last)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
