"""Datasets: every loader returns uint8 (N, H, W, C) splits, prepared once and memory-mapped after."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from imgsearch.datasets.base import (CACHE_VERSION, SPLIT_SEED, Dataset, carve_validation, check_fits_in_memory,
                                  check_labeled, load_cache, save_cache)
from imgsearch.choices import DATASETS, NATIVE_SIZE
from imgsearch.settings import BY_NAME
from imgsearch.storage.errors import UserError



@dataclass(frozen=True)
class DatasetSpec:
    """Which data, at which size: the whole configuration of a loaded Dataset.

    ``image_size`` None means the dataset's native size; ``labels`` applies to cifar100;
    ``folder`` is the root of a ``folder`` dataset; ``val_fraction`` of the training data
    becomes the search's validation split.
    """

    name: str
    image_size: int | None = None
    labels: str = "fine"
    folder: str | None = None
    val_fraction: float = 0.1

    def __post_init__(self):
        if self.name not in NATIVE_SIZE:
            raise UserError(f"unknown DATASET {self.name!r}; choose one of: {', '.join(DATASETS)}")
        if self.name == "folder" and not self.folder:
            raise UserError("DATASET=folder needs FOLDER=<path with train/<class>/ and validation/<class>/>")
        if self.image_size is not None:
            BY_NAME["image_size"].validate(self.image_size)  # the setting's bounds, one message
        if not 0 < self.val_fraction < 0.5:
            raise UserError(f"val_fraction {self.val_fraction} must be between 0 and 0.5")

    @property
    def size(self) -> int:
        return self.image_size or NATIVE_SIZE[self.name]

    def cache_key(self) -> str:
        variant = self.labels if self.name == "cifar100" else ""
        if self.name == "folder":
            from imgsearch.datasets.folder import fingerprint

            root = Path(self.folder).resolve()
            variant = hashlib.sha1(f"{root}|{fingerprint(root)}".encode()).hexdigest()[:12]
        return f"{self.name}{'-' + variant if variant else ''}-{self.size}px-val{self.val_fraction}-s{SPLIT_SEED}-v{CACHE_VERSION}"

    def check_data_dir(self, data_dir: Path) -> None:
        """UserError when DATA_DIR cannot serve this dataset: a file, or a folder where its cache
        is not there yet and cannot be written."""
        data_dir = Path(data_dir)
        if data_dir.exists() and not data_dir.is_dir():
            raise UserError(f"DATA_DIR {data_dir} is a file, not a folder; set DATA_DIR to a folder")
        if (data_dir / "cache" / self.cache_key() / "meta.json").is_file():
            return
        existing = next(p for p in (data_dir / "cache", data_dir, *data_dir.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise UserError(f"DATA_DIR {data_dir} is not writable: the prepared dataset is cached in "
                            f"{data_dir / 'cache'}; set DATA_DIR to a folder you can write")

    def load(self, data_dir: Path) -> Dataset:
        """The splits from the cache in ``data_dir/cache``, preparing and caching them first if needed."""
        if self.name == "folder" and not Path(self.folder).is_dir():
            raise UserError(f"FOLDER {self.folder} is not a directory")
        cache = Path(data_dir) / "cache" / self.cache_key()
        dataset = load_cache(cache)
        if dataset is None:
            labeled = self._prepare(Path(data_dir))
            check_labeled(labeled, self.name)
            save_cache(carve_validation(labeled, self.name, self.val_fraction), cache)
            dataset = load_cache(cache)
        return dataset

    def _prepare(self, data_dir: Path):
        from imgsearch.datasets.images import resize_images

        if self.name == "tinyimagenet":
            from imgsearch.datasets.tinyimagenet import load_tinyimagenet

            return load_tinyimagenet(data_dir, self.size)
        if self.name == "folder":
            from imgsearch.datasets.folder import load_folder

            return load_folder(Path(self.folder), self.size)
        from imgsearch.datasets import builtin

        raw = builtin.load_digits() if self.name == "digits" else builtin.load_keras(self.name, self.labels)
        check_fits_in_memory(len(raw.x_train) + len(raw.x_test), self.size, raw.x_train.shape[-1])
        return type(raw)(resize_images(raw.x_train, self.size), raw.y_train,
                         resize_images(raw.x_test, self.size), raw.y_test, raw.class_names)


__all__ = ["DATASETS", "Dataset", "DatasetSpec", "NATIVE_SIZE"]
