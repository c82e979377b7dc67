"""Tiny ImageNet in the layout of the official tiny-imagenet-200.zip.

train/<wnid>/images/*.JPEG are the training images; val/images + val/val_annotations.txt
become our test split (test/ is unlabeled and ignored). Read straight from the zip, or
from the unpacked folder when there is one.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from imgsearch.datasets.base import Labeled
from imgsearch.datasets.download import download
from imgsearch.datasets.images import decode_images
from imgsearch.storage.errors import UserError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"  # TINYIMAGENET_URL, read at each download, points at a mirror
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
ROOT = "tiny-imagenet-200"


class _Tree:
    """Uniform read access to the unpacked folder or the zip."""

    def __init__(self, data_dir: Path):
        folder, archive = data_dir / ROOT, data_dir / f"{ROOT}.zip"
        if folder.is_dir():
            self.source, self.prefix = folder, ""
            # os.walk and string joins, not rglob + is_file + pathlib per file: on 110k files
            # pathlib alone took seconds.
            self.files = []
            for path, _, names in os.walk(folder):
                prefix = Path(path).relative_to(folder).as_posix() + "/"
                self.files += [name if prefix == "./" else prefix + name for name in names]
            self.file_set = set(self.files)
            self._read = lambda name: (folder / name).read_bytes()
            return
        if not archive.is_file():
            download(os.environ.get("TINYIMAGENET_URL", URL), archive, MD5)
        try:
            zf = zipfile.ZipFile(archive)
        except (zipfile.BadZipFile, OSError) as exc:
            raise UserError(f"{archive} is not a readable zip ({exc}); truncated download? delete it and run again") from None
        names = zf.namelist()
        top = f"{ROOT}/" if any(n.startswith(f"{ROOT}/") for n in names) else ""
        self.source, self.prefix = archive, top
        self.files = [n[len(top):] for n in names if n.startswith(top) and not n.endswith("/")]
        self.file_set = set(self.files)

        def read(name: str) -> bytes:
            try:
                return zf.read(top + name)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UserError(f"{archive}: cannot read {top + name} ({exc}); truncated zip?") from None

        self._read = read

    def text(self, name: str) -> str:
        if name not in self.file_set:
            raise UserError(f"{self.source}: missing {self.prefix}{name}; is this the official tiny-imagenet-200 layout?")
        return self._read(name).decode("utf-8")


def load_tinyimagenet(data_dir: Path, image_size: int) -> Labeled:
    """Decode Tiny ImageNet at ``image_size`` (64 native; smaller sizes are box-downsampled)."""
    tree = _Tree(data_dir)
    wnids = tree.text("wnids.txt").split()
    words = dict(line.split("\t", 1) for line in tree.text("words.txt").splitlines() if "\t" in line)
    index = {wnid: i for i, wnid in enumerate(wnids)}

    train_files: dict[str, list[str]] = {wnid: [] for wnid in wnids}
    for name in tree.files:
        parts = name.split("/")
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and parts[1] in train_files:
            train_files[parts[1]].append(name)
    for wnid, files in train_files.items():
        if not files:
            raise UserError(f"{tree.source}: class folder {tree.prefix}train/{wnid}/images has no images")

    annotations = tree.text("val/val_annotations.txt")
    test_files, test_labels = [], []
    for line_no, line in enumerate(annotations.splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise UserError(f"{tree.source}: val/val_annotations.txt line {line_no} is malformed or names an unknown class")
        test_files.append(f"val/images/{fields[0]}")
        test_labels.append(index[fields[1]])
    missing = sorted(set(test_files) - tree.file_set)
    if missing:
        raise UserError(f"{tree.source}: {len(missing)} images listed in val/val_annotations.txt are missing (e.g. {missing[0]})")

    members = [tree.prefix + f for wnid in wnids for f in sorted(train_files[wnid])]
    labels = np.array([index[w] for w in wnids for _ in train_files[w]], dtype=np.int64)
    (x_train, ok), (x_test, ok_test) = decode_images(
        tree.source, [("training images", members), ("val images", [tree.prefix + f for f in test_files])], image_size)
    class_names = [words.get(w, w).split(",")[0].strip() for w in wnids]
    return Labeled(x_train, labels[ok], x_test, np.array(test_labels, dtype=np.int64)[ok_test], class_names)
