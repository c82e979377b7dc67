"""A frozen backbone's features, computed once and kept.

Fine-tuning on a CPU is mostly the backbone's forward pass, repeated for every trial and epoch.
A head trained on a frozen backbone sees the same pooled features every time, so they are
computed once per (backbone, its weights file, resolution, dataset) and kept in memory and on
disk beside the dataset's cache (``<dataset cache>/features/<key>/``). The key changes, and so
the features are computed again, when any of those change. The horizontally flipped images'
features are kept apart (the head's flip augmentation), computed only when a trial flips.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from imgsearch.spaces.backbones import ZOO, BackbonePreprocess, load_backbone, weights_path
from imgsearch.storage.files import write_atomic

#: Features kept in this process, by key: a trial after the first finds them here.
_MEMORY: dict[str, tuple[np.ndarray, ...]] = {}
_BATCH = 128


@dataclass(frozen=True)
class Features:
    """Pooled features (float32, one row an image) of the training images, the same images
    flipped left-right (None when not asked for), and the validation images."""

    train: np.ndarray
    train_flipped: np.ndarray | None
    val: np.ndarray


def weights_identity(backbone: str, weights: str, weights_dir: str | None) -> str:
    """What names the weights a backbone loads: the file's name, size and modification time (a
    new file is new weights), Keras's own download, or none."""
    if weights == "none":
        return "random"
    if not weights_dir:
        return "keras-imagenet"
    stat = weights_path(ZOO[backbone], weights_dir).stat()
    return f"{ZOO[backbone].weights_file}-{stat.st_size}-{stat.st_mtime_ns}"


def feature_key(backbone: str, weights: str, weights_dir: str | None, resolution: int, dataset: str) -> str:
    """The cache key: the backbone, its weights, the resolution and the dataset (its cache's name)."""
    parts = f"{backbone}|{weights_identity(backbone, weights, weights_dir)}|{resolution}|{dataset}"
    return f"{backbone}-{resolution}px-{hashlib.sha1(parts.encode()).hexdigest()[:12]}"


def extractor(backbone: str, weights: str, weights_dir: str | None, image_shape: tuple[int, int, int],
              resolution: int) -> keras.Model:
    """uint8 images -> the frozen backbone's globally average-pooled features."""
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0, name="to_float")(inputs)
    if image_shape[-1] == 1:
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
    if tuple(image_shape[:2]) != (resolution, resolution):
        x = layers.Resizing(resolution, resolution, name="resize")(x)
    x = BackbonePreprocess(backbone, name="preprocess")(x)
    net = load_backbone(backbone, weights, weights_dir)
    net.trainable = False
    return keras.Model(inputs, layers.GlobalAveragePooling2D(name="pool")(net(x)), name=f"features_{backbone}")


def frozen_features(backbone: str, weights: str, weights_dir: str | None, resolution: int, data,
                    flipped: bool = False) -> Features:
    """The features of ``data``'s (a Dataset) training images and validation images, and with
    ``flipped`` of the flipped training images (None without): from memory, from the disk cache
    in ``data.cache/features`` (none when the dataset was not loaded from a cache), or computed
    once and kept in both. The flipped ones are kept apart, computed only for a trial that flips
    (on 45,000 images they are minutes of a CPU budget)."""
    x_train, x_val = data.x_train, data.x_val
    cache, key = _where(backbone, weights, weights_dir, resolution, data)
    model = []  # the extractor, built once when something is computed

    def compute(x) -> np.ndarray:
        if not model:
            model.append(extractor(backbone, weights, weights_dir, tuple(x_train.shape[1:]), resolution))
        return model[0].predict(x, batch_size=_BATCH, verbose=0).astype(np.float32)

    train, val = _kept(cache, key, {"train": len(x_train), "val": len(x_val)},
                       lambda: (compute(x_train), compute(x_val)))
    flip = _kept(cache, f"{key}-flipped", {"train_flipped": len(x_train)},
                 lambda: (compute(np.asarray(x_train)[:, :, ::-1]),))[0] if flipped else None
    return Features(train, flip, val)


def images_to_compute(backbone: str, weights: str, weights_dir: str | None, resolution: int, data,
                      flipped: bool = False) -> int:
    """How many images ``frozen_features`` would run through the backbone now (0: all kept)."""
    cache, key = _where(backbone, weights, weights_dir, resolution, data)
    parts = [(key, len(data.x_train) + len(data.x_val))] + ([(f"{key}-flipped", len(data.x_train))] if flipped else [])
    return sum(count for name, count in parts
               if name not in _MEMORY and not (cache is not None and (cache / name / "meta.json").is_file()))


def _where(backbone: str, weights: str, weights_dir: str | None, resolution: int, data) -> tuple[Path | None, str]:
    """The disk cache folder of ``data``'s features (None: not loaded from a cache) and their key."""
    x_train = data.x_train
    dataset = data.cache.name if data.cache is not None else f"{data.name}-{len(x_train)}-{x_train.shape[1:]}"
    cache = data.cache / "features" if data.cache is not None else None
    return cache, feature_key(backbone, weights, weights_dir, resolution, dataset)


def _kept(cache: Path | None, key: str, rows: dict[str, int], compute) -> tuple[np.ndarray, ...]:
    """The arrays named in ``rows`` (name: row count) under ``key``: from memory, the disk cache,
    or ``compute()`` (in that order), kept in both."""
    if key in _MEMORY and all(len(a) == n for a, n in zip(_MEMORY[key], rows.values())):
        return _MEMORY[key]
    folder = cache / key if cache is not None else None
    arrays = _read(folder, rows) if folder is not None else None
    if arrays is None:
        arrays = compute()
        if folder is not None:
            _write(folder, dict(zip(rows, arrays)), key)
    _MEMORY[key] = arrays
    return arrays


def _read(folder: Path, rows: dict[str, int]) -> tuple[np.ndarray, ...] | None:
    if not (folder / "meta.json").is_file():
        return None
    arrays = tuple(np.load(folder / f"{name}.npy") for name in rows)
    if any(len(a) != n for a, n in zip(arrays, rows.values())):
        return None  # kept for other data under the same name: computed again
    return arrays


def _write(folder: Path, arrays: dict[str, np.ndarray], key: str) -> None:
    def write(tmp: Path) -> None:
        tmp.mkdir()
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array)
        (tmp / "meta.json").write_text(json.dumps({"key": key, "rows": len(next(iter(arrays.values())))}))

    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(folder, write)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        # another worker kept the same features first
