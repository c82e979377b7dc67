"""A user's own images: <root>/train/<class>/* and <root>/validation/<class>/* (or test/)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imgsearch.datasets.base import Labeled
from imgsearch.datasets.images import decode_images
from imgsearch.storage.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
HELD_OUT_NAMES = ("validation", "test")


def _images_by_class(split_dir: Path) -> dict[str, list[str]]:
    classes = sorted(p for p in split_dir.iterdir() if p.is_dir())
    found = {}
    for class_dir in classes:
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(f"class folder {class_dir} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        found[class_dir.name] = [str(f.relative_to(split_dir.parent)) for f in files]
    return found


def fingerprint(root: Path) -> str:
    """Changes when files are added, removed or rewritten under ``root``: part of the cache key."""
    stats = [p.stat() for p in root.rglob("*") if p.is_file()]
    return f"{len(stats)}-{max((s.st_mtime_ns for s in stats), default=0)}-{sum(s.st_size for s in stats)}"


def load_folder(root: Path, image_size: int) -> Labeled:
    """Decode every class folder at ``image_size`` (centre-cropped to a square, RGB)."""
    if not (root / "train").is_dir():
        raise UserError(f"{root}: no train/ folder (expected train/<class>/* and validation/<class>/*)")
    held_out = next((root / n for n in HELD_OUT_NAMES if (root / n).is_dir()), None)
    if held_out is None:
        raise UserError(f"{root}: no validation/ or test/ folder next to train/")
    train = _images_by_class(root / "train")
    if len(train) < 2:
        raise UserError(f"{root / 'train'}: found {len(train)} class folder, a classifier needs at least 2")
    test = _images_by_class(held_out)
    if not test:
        raise UserError(f"{held_out}: no class folders (expected {held_out.name}/<class>/* with the same class "
                        f"names as {root / 'train'})")
    unknown = sorted(set(test) - set(train))
    if unknown:
        raise UserError(f"{held_out}: class folder {unknown[0]} does not exist in {root / 'train'}")
    names = sorted(train)
    index = {name: i for i, name in enumerate(names)}

    def members(files: dict[str, list[str]]) -> list[str]:
        return [f for c in names for f in files.get(c, [])]

    def labels(files: dict[str, list[str]]) -> np.ndarray:
        return np.array([index[c] for c in names for _ in files.get(c, [])], dtype=np.int64)

    (x_train, ok_train), (x_test, ok_test) = decode_images(
        root, [("training images", members(train)), (f"{held_out.name} images", members(test))], image_size)
    return Labeled(x_train, labels(train)[ok_train], x_test, labels(test)[ok_test], names)
