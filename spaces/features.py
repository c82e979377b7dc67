"""A frozen backbone's features, computed once and kept.

Fine-tuning on a CPU is mostly the backbone's forward pass, repeated for every trial and epoch.
A head trained on a frozen backbone sees the same pooled features every time, so they are
computed once per (backbone, its weights file, resolution, dataset) and kept in memory and on
disk beside the dataset's cache (``<dataset cache>/features/<key>/``). The key changes, and so
the features are computed again, when any of those change. The horizontally flipped images'
features are kept too: the head's flip augmentation.
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
_MEMORY: dict[str, Features] = {}
_BATCH = 128


@dataclass(frozen=True)
class Features:
    """Pooled features (float32, one row an image) of the training images, the same images
    flipped left-right, and the validation images."""

    train: np.ndarray
    train_flipped: np.ndarray
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


def frozen_features(backbone: str, weights: str, weights_dir: str | None, resolution: int, data) -> Features:
    """The features of ``data``'s (a Dataset) training images (and flipped) and validation
    images: from memory, from the disk cache in ``data.cache/features`` (none when the dataset
    was not loaded from a cache), or computed once and kept in both."""
    x_train, x_val = data.x_train, data.x_val
    dataset = data.cache.name if data.cache is not None else f"{data.name}-{len(x_train)}-{x_train.shape[1:]}"
    cache = data.cache / "features" if data.cache is not None else None
    key = feature_key(backbone, weights, weights_dir, resolution, dataset)
    if key in _MEMORY and len(_MEMORY[key].train) == len(x_train) and len(_MEMORY[key].val) == len(x_val):
        return _MEMORY[key]
    folder = cache / key if cache is not None else None
    features = _read(folder, len(x_train), len(x_val)) if folder is not None else None
    if features is None:
        model = extractor(backbone, weights, weights_dir, tuple(x_train.shape[1:]), resolution)
        features = Features(*(model.predict(x, batch_size=_BATCH, verbose=0).astype(np.float32)
                              for x in (x_train, np.asarray(x_train)[:, :, ::-1], x_val)))
        if folder is not None:
            _write(folder, features, key)
    _MEMORY[key] = features
    return features


def _read(folder: Path, n_train: int, n_val: int) -> Features | None:
    if not (folder / "meta.json").is_file():
        return None
    arrays = {name: np.load(folder / f"{name}.npy") for name in ("train", "train_flipped", "val")}
    if len(arrays["train"]) != n_train or len(arrays["val"]) != n_val:
        return None  # kept for other data under the same name: computed again
    return Features(**arrays)


def _write(folder: Path, features: Features, key: str) -> None:
    def write(tmp: Path) -> None:
        tmp.mkdir()
        for name in ("train", "train_flipped", "val"):
            np.save(tmp / f"{name}.npy", getattr(features, name))
        (tmp / "meta.json").write_text(json.dumps({"key": key, "rows": len(features.train)}))

    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(folder, write)
    except OSError:
        if not (folder / "meta.json").is_file():
            raise
        # another worker kept the same features first
