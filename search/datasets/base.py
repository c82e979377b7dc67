"""What every loader returns, the validation carve and the .npy cache."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from imgsearch.storage.errors import UserError
from imgsearch.storage.files import remove_leftovers, write_atomic
from imgsearch.storage.machine import GIB, available_memory

# The validation split is carved with this seed whatever SEED is, so every trial,
# worker and rerun of a study optimises on the same images.
SPLIT_SEED = 0
CACHE_VERSION = 1


@dataclass(frozen=True)
class Labeled:
    """A loader's raw result: uint8 images (N, H, W, C) and int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]


@dataclass(frozen=True)
class Dataset:
    """Train / validation / test splits of uint8 (N, H, W, C) images with int64 labels.

    The search fits on ``train`` and scores on ``val`` (carved from the training data,
    stratified, fixed seed); ``test`` is only ever read by evaluation.
    Arrays may be read-only memory maps of the cache.
    """

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    cache: Path | None = None  # the folder it was loaded from (spaces keep what they compute from it there)
    fingerprint: str | None = None  # of the arrays it was made from, for a dataset of arrays (datasets/arrays.py)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# The share of the available memory a dataset's preparation may take: training needs the rest.
MEMORY_SHARE = 0.8


def check_fits_in_memory(count: int, size: int, channels: int) -> None:
    """UserError, before anything is decoded, when ``count`` images of ``size`` x ``size`` x
    ``channels`` bytes would take more than MEMORY_SHARE of the available memory; it names the
    largest IMAGE_SIZE that fits."""
    need, available = count * size * size * channels, available_memory()
    if need <= MEMORY_SHARE * available:
        return
    largest = int(math.sqrt(MEMORY_SHARE * available / (count * channels)))
    raise UserError(f"IMAGE_SIZE={size}: the {count:,} images would take {need / GIB:.1f} GiB of memory "
                    f"({size}x{size}x{channels} bytes each), more than {MEMORY_SHARE:.0%} of the "
                    f"{available / GIB:.1f} GiB available; set IMAGE_SIZE={largest} or less")


def check_labeled(data: Labeled, origin: str) -> None:
    """Raise UserError unless ``data`` has >= 2 classes and well-formed uint8 arrays."""
    if len(data.class_names) < 2:
        raise UserError(f"{origin}: found {len(data.class_names)} class, a classifier needs at least 2")
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if len(x) == 0:
            raise UserError(f"{origin}: no {split} images")
        if x.dtype != np.uint8 or x.ndim != 4 or len(x) != len(y):
            raise ValueError(f"{origin}: bad {split} arrays {x.dtype} {x.shape} / {y.shape}")


def carve_validation(data: Labeled, name: str, val_fraction: float) -> Dataset:
    """Split a stratified, seeded validation set off the training data.

    Consumes ``data``: the kept training rows are moved to the front of its own (writable)
    x_train, so the largest array is never held twice.
    """
    from sklearn.model_selection import train_test_split  # imported here: a second of start-up

    counts = np.bincount(data.y_train, minlength=len(data.class_names))
    # At least one validation image per class, so stratification is possible.
    n_val = max(len(data.class_names), int(round(val_fraction * len(data.y_train))))
    if counts.min() < 2 or n_val > len(data.y_train) - len(data.class_names):
        raise UserError(
            f"{name}: too few training images to carve a validation split "
            f"(smallest class has {counts.min()}, need 2 per class)"
        )
    train_idx, val_idx = train_test_split(
        np.arange(len(data.y_train)), test_size=n_val, stratify=data.y_train, random_state=SPLIT_SEED
    )
    train_idx.sort()
    val_idx.sort()
    x_val = data.x_train[val_idx]
    return Dataset(
        name=name,
        class_names=list(data.class_names),
        x_train=keep_rows(data.x_train, train_idx),
        y_train=data.y_train[train_idx].astype(np.int64),
        x_val=x_val,
        y_val=data.y_train[val_idx].astype(np.int64),
        x_test=data.x_test,
        y_test=data.y_test.astype(np.int64),
    )


def keep_rows(x: np.ndarray, rows: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """``x[rows]`` for sorted, distinct ``rows``, written over x's own first rows when x is
    writable (else a copy). In place is safe front to back: rows[i] >= i, so a chunk never
    overwrites a row that a later chunk still reads."""
    if not x.flags.writeable:
        return x[rows]
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        x[start:start + len(part)] = x[part]
    return x[:len(rows)]


_ARRAYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def save_cache(dataset: Dataset, folder: Path) -> None:
    """Write the splits as .npy files; atomic, so a killed run never leaves half a cache."""
    remove_leftovers(folder.parent)  # half-written caches of killed processes

    def write(tmp: Path) -> None:
        tmp.mkdir()
        for key in _ARRAYS:
            np.save(tmp / f"{key}.npy", getattr(dataset, key))
        (tmp / "meta.json").write_text(json.dumps({"name": dataset.name, "class_names": dataset.class_names}))

    if folder.exists() and not (folder / "meta.json").is_file():
        shutil.rmtree(folder)  # left half-written by an older version's killed run
    try:
        write_atomic(folder, write)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        # another process finished the same cache first


def load_cache(folder: Path) -> Dataset | None:
    """The cached splits as read-only memory maps, or None when there is no complete cache."""
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    info = json.loads(meta.read_text())
    arrays = {key: np.load(folder / f"{key}.npy", mmap_mode="r") for key in _ARRAYS}
    return Dataset(name=info["name"], class_names=info["class_names"], cache=folder, **arrays)
