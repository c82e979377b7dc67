"""Benchmark (not a test): the first preparation of Tiny ImageNet, its seconds and peak memory.

3. the ../shared sample (5,000 train + 500 val JPEGs, zip) at 64 and 32 px: first
   preparation vs cached reload;
4. a tree the size of the full Tiny ImageNet (200 classes x 500 train + 10,000 val JPEGs,
   unpacked folder) made of the sample's real JPEGs, each written 20 times, or the real
   tiny-imagenet-200 folder with --full DIR: first preparation at 64 px, with the peak RSS of
   this process and its decoders summed (sampled every 20 ms).

Run: `make bench` (after overhead.py), or .venv/bin/python benchmarks/prepare.py [--full DIR].
Its imports stay light on purpose: the decoders are spawned, and spawning re-imports this
script (`python -m imgsearch` is not re-imported, so this measures what a search pays).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import psutil

from imgsearch.datasets import DatasetSpec

SHARED_ZIP = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "tiny-imagenet-sample.zip"
FULL_CLASSES, FULL_PER_CLASS, FULL_VAL = 200, 500, 10_000


class PeakRSS:
    """Peak resident memory of this process plus its children, sampled in a thread."""

    def __init__(self, every_s: float = 0.02):
        self.every_s, self.peak, self._stop = every_s, 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:  # a decoder that just exited
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.every_s)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def first_and_cached(spec: DatasetSpec, data_dir: Path) -> tuple[float, float, int]:
    """Seconds of the first preparation, of a cached reload that reads every page, and the
    first preparation's peak RSS in bytes."""
    with PeakRSS() as peak:
        started = time.perf_counter()
        spec.load(data_dir)
        first = time.perf_counter() - started
    started = time.perf_counter()
    cached = spec.load(data_dir)
    np.asarray(cached.x_train).sum()  # touch every byte of the memory map
    return first, time.perf_counter() - started, peak.peak


def full_size_tree(root: Path) -> Path:
    """A tiny-imagenet-200 folder of the official size, from the sample's real JPEGs."""
    base = root / "tiny-imagenet-200"
    with zipfile.ZipFile(SHARED_ZIP) as zf:
        names = zf.namelist()
        train = [zf.read(n) for n in names if "/train/" in n and n.endswith(".JPEG")]
        val = [zf.read(n) for n in names if "/val/images/" in n and n.endswith(".JPEG")]
    wnids = [f"n{i:08d}" for i in range(FULL_CLASSES)]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\tclass {w}\n" for w in wnids))
    for c, wnid in enumerate(wnids):
        images = base / "train" / wnid / "images"
        images.mkdir(parents=True)
        for i in range(FULL_PER_CLASS):
            (images / f"{wnid}_{i}.JPEG").write_bytes(train[(c * FULL_PER_CLASS + i) % len(train)])
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
    lines = []
    for i in range(FULL_VAL):
        (base / "val" / "images" / f"val_{i}.JPEG").write_bytes(val[i % len(val)])
        lines.append(f"val_{i}.JPEG\t{wnids[i % FULL_CLASSES]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return base


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", type=Path, help="a real unpacked tiny-imagenet-200 folder for line 4")
    args = parser.parse_args()
    if not SHARED_ZIP.is_file():
        print(f"3-4. skipped: {SHARED_ZIP} not found", file=sys.stderr)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    try:
        print(f"\n3. Tiny ImageNet sample ({SHARED_ZIP.name}: 5,000 train + 500 val JPEGs), "
              f"{psutil.cpu_count()} cores:")
        for size in (64, 32):
            data_dir = tmp / f"sample{size}"
            data_dir.mkdir()
            (data_dir / "tiny-imagenet-200.zip").symlink_to(SHARED_ZIP)
            first, again, peak = first_and_cached(DatasetSpec("tinyimagenet", image_size=size), data_dir)
            print(f"   {size} px: first preparation {first:6.2f} s (peak RSS {peak / 2**30:.2f} GiB), "
                  f"cached reload (all pages read) {again:6.3f} s ({first / again:.0f}x faster)", flush=True)

        data_dir = tmp / "full"
        data_dir.mkdir()
        if args.full:
            (data_dir / "tiny-imagenet-200").symlink_to(args.full.resolve())
            what = f"the real tree in {args.full}"
        else:
            started = time.perf_counter()
            full_size_tree(data_dir)
            what = (f"a generated tree of the sample's JPEGs ({FULL_CLASSES * FULL_PER_CLASS:,} train + "
                    f"{FULL_VAL:,} val; written in {time.perf_counter() - started:.0f} s, not counted)")
        first, again, peak = first_and_cached(DatasetSpec("tinyimagenet"), data_dir)
        print(f"\n4. full-size Tiny ImageNet, unpacked folder, 64 px: {what}:")
        print(f"   first preparation {first:6.2f} s, peak RSS {peak / 2**30:.2f} GiB (this process + decoders), "
              f"cached reload (all pages read) {again:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
