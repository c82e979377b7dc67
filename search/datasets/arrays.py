"""A dataset from NumPy arrays already in memory (the Python API's ``x_train, y_train``).

The arrays are checked (one clear error each), resized as a folder's images are, and split as
the named datasets are: without validation arrays a stratified share of the training data is
carved off with the fixed split seed; without test arrays a stratified fifth of it. The user's
arrays are never written to. ``fingerprint`` names the data, so a study on arrays can refuse a
resume with other arrays.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np

from imgsearch.datasets.base import SPLIT_SEED, Dataset, Labeled, carve_validation, check_labeled
from imgsearch.datasets.images import resize_images
from imgsearch.storage.errors import UserError

NAME = "arrays"  # the DATASET a study on arrays records
TEST_FRACTION = 0.2  # of the training arrays, carved off when no test arrays are given


def _images(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.uint8:
        hint = " (e.g. (x * 255).round().astype('uint8') for floats in 0-1)" if x.dtype.kind == "f" else ""
        raise UserError(f"{what} must be uint8 images with values 0-255, not {x.dtype}{hint}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape[1:3]) < 1:
        raise UserError(f"{what} must be images (N, H, W) or (N, H, W, C) with C 1 or 3, not shape {x.shape}")
    if len(x) == 0:
        raise UserError(f"{what} holds no images")
    view = x.view()
    view.flags.writeable = False  # carve_validation would otherwise reorder the user's array in place
    return view


def _labels(y, count: int, what: str, images: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise UserError(f"{what} must be one label per image (N,) or (N, 1), not shape {y.shape}")
    if len(y) != count:
        raise UserError(f"{what} has {len(y)} labels for the {count} images of {images}")
    return y


def fingerprint(*arrays, class_names=None) -> str:
    """A SHA-256 of the arrays' shapes, dtypes and bytes (and the class names): same data, same text."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none")
            continue
        array = np.asarray(array)
        array = np.ascontiguousarray(array.astype(str) if array.dtype == object else array)
        digest.update(f"{array.shape}{array.dtype}".encode())
        digest.update(memoryview(array).cast("B"))
    digest.update(repr(class_names).encode())
    return digest.hexdigest()[:16]


def from_arrays(x_train, y_train, x_val=None, y_val=None, x_test=None, y_test=None, class_names=None,
                image_size: int | None = None, val_fraction: float = 0.1) -> Dataset:
    """The splits of a Dataset named ``arrays``; UserError for anything malformed.

    Labels are integers 0..K-1 (``class_names`` gives K names; else K is the largest label + 1
    and the names are the numbers) or strings (the sorted distinct strings become the classes).
    Images are resized to ``image_size`` (default: their height, when square).
    """
    given = fingerprint(x_train, y_train, x_val, y_val, x_test, y_test, class_names=class_names)
    for x, y, what in ((x_val, y_val, "val"), (x_test, y_test, "test")):
        if (x is None) != (y is None):
            raise UserError(f"give both x_{what} and y_{what}, or neither")
    splits = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    images = {k: _images(x, f"x_{k}") for k, (x, _) in splits.items() if x is not None}
    labels = {k: _labels(y, len(images[k]), f"y_{k}", f"x_{k}") for k, (_, y) in splits.items() if y is not None}
    shape = images["train"].shape[1:]
    for key, x in images.items():
        if x.shape[-1] != shape[-1]:
            raise UserError(f"x_{key} has {x.shape[-1]} channels, x_train {shape[-1]}")
    if image_size is None:
        if shape[0] != shape[1]:
            raise UserError(f"x_train's images are {shape[0]}x{shape[1]}: give image_size= to make them square")
        image_size = shape[0]
    class_names, labels = _classes(labels, class_names)
    images = {k: resize_images(x, image_size) for k, x in images.items()}
    if "test" not in images:
        images["train"], labels["train"], images["test"], labels["test"] = _carve_test(images["train"], labels["train"])
    labeled = Labeled(images["train"], labels["train"], images["test"], labels["test"], class_names)
    check_labeled(labeled, NAME)
    if "val" not in images:
        return replace(carve_validation(labeled, NAME, val_fraction), fingerprint=given)
    return Dataset(NAME, class_names, labeled.x_train, labeled.y_train, images["val"], labels["val"],
                   labeled.x_test, labeled.y_test, fingerprint=given)


def _classes(labels: dict[str, np.ndarray], class_names) -> tuple[list[str], dict[str, np.ndarray]]:
    if all(y.dtype.kind in "US" for y in labels.values()):  # string labels: the classes are their names
        names = sorted(set().union(*(map(str, np.unique(y)) for y in labels.values())))
        if class_names is not None and list(class_names) != names:
            raise UserError("with string labels the classes are the labels themselves: leave class_names out")
        index = {name: i for i, name in enumerate(names)}
        return names, {k: np.array([index[str(v)] for v in y], dtype=np.int64) for k, y in labels.items()}
    for key, y in labels.items():
        if y.dtype.kind not in "iu":
            raise UserError(f"y_{key} must hold integer class indices (or strings), not {y.dtype}")
    top = max(int(y.max()) for y in labels.values())
    low = min(int(y.min()) for y in labels.values())
    names = [str(i) for i in range(top + 1)] if class_names is None else [str(c) for c in class_names]
    if low < 0 or top >= len(names):
        raise UserError(f"labels run from {low} to {top}, but there are {len(names)} class names "
                        f"(labels are class indices 0..{len(names) - 1})")
    return names, {k: y.astype(np.int64) for k, y in labels.items()}


def _carve_test(x: np.ndarray, y: np.ndarray):
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    if counts[counts > 0].min() < 3:
        raise UserError("too few training images to carve test and validation splits (need 3 per class); "
                        "give x_test and y_test")
    train, test = train_test_split(np.arange(len(y)), test_size=TEST_FRACTION, stratify=y, random_state=SPLIT_SEED)
    train.sort()
    test.sort()
    return x[train], y[train], x[test], y[test]
