"""Classify new images with an exported model: each image's top-k class names and probabilities.

Images are prepared exactly as the dataset's were (``search/datasets/images.py``: decoded to
RGB or grayscale, a centre square, a box filter when shrinking, bicubic when enlarging), so a
model sees what it was trained on. The class names and input shape come from the export's
``model.json``.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from imgsearch.datasets.folder import IMAGE_SUFFIXES
from imgsearch.datasets.images import decode_images, resize_images
from imgsearch.records import INFO_FILE
from imgsearch.storage.errors import UserError
from imgsearch.storage.files import write_atomic



class Classifier:
    """An exported model with what it needs to classify: ``input_shape`` (H, W, C) and
    ``class_names`` from its ``model.json``. Keras loads the model when it first classifies, so
    bad input is said before TensorFlow starts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"MODEL {self.path}: no such file (an exported model.keras)")
        info_path = self.path.parent / INFO_FILE
        if not info_path.is_file():
            raise UserError(f"MODEL {self.path}: no {INFO_FILE} beside it (it holds the class names and input shape)")
        info = json.loads(info_path.read_text())
        self.input_shape, self.class_names = tuple(info["input_shape"]), list(info["class_names"])
        self._model = None

    @property
    def model(self):
        if self._model is None:
            import keras

            try:
                self._model = keras.saving.load_model(self.path, compile=False)
            except (ValueError, OSError, zipfile.BadZipFile) as exc:
                why = str(exc).splitlines()[0][:200]
                raise UserError(f"MODEL {self.path}: not a Keras model file ({why})") from None
        return self._model

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 images (N, H, W) or (N, H, W, C) of any size, as the model takes them."""
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise UserError(f"images must be uint8 (0-255), not {images.dtype}")
        if images.ndim == 3:
            images = images[..., None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise UserError(f"images must be (N, H, W) or (N, H, W, C) with C 1 or 3, not {images.shape}")
        size, channels = self.input_shape[0], self.input_shape[-1]
        if images.shape[-1] != channels:
            if channels == 1:
                raise UserError("this model takes grayscale images; give (N, H, W) arrays or image files")
            images = np.repeat(images, 3, axis=-1)
        return resize_images(images, size)

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self.prepare(images), batch_size=256, verbose=0))

    def top_k(self, probabilities: np.ndarray, names: list[str], k: int):
        """A pandas DataFrame: ``image``, then ``class_1``, ``probability_1`` ... to ``k``."""
        import pandas as pd

        k = min(k, len(self.class_names))
        order = np.argsort(-probabilities, axis=1)[:, :k]
        table = {"image": names}
        for rank in range(k):
            table[f"class_{rank + 1}"] = [self.class_names[i] for i in order[:, rank]]
            table[f"probability_{rank + 1}"] = probabilities[np.arange(len(order)), order[:, rank]].round(4)
        return pd.DataFrame(table)


def image_files(source: str | Path) -> tuple[Path, list[str]]:
    """(where to read from, members): one image file, a folder's image files (recursively), or a
    zip's. UserError when ``source`` does not exist or holds no images."""
    source = Path(source)
    if source.is_dir():
        members = sorted(p.relative_to(source).as_posix() for p in source.rglob("*")
                         if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    elif source.is_file() and source.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(source) as archive:
                members = sorted(n for n in archive.namelist()
                                 if Path(n).suffix.lower() in IMAGE_SUFFIXES and not n.startswith("__MACOSX/"))
        except zipfile.BadZipFile:
            raise UserError(f"IMAGES {source}: not a readable zip") from None
    elif source.is_file():
        return source.parent, [source.name]
    else:
        raise UserError(f"IMAGES {source}: no such file or folder")
    if not members:
        raise UserError(f"IMAGES {source}: no images in it ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return source, members


def predict_files(classifier: Classifier, source: str | Path, k: int = 5):
    """The top-k DataFrame for the images in ``source`` (a file, a folder or a zip). An image that
    does not decode is skipped with a warning, as in a dataset; a source that is mostly not
    images is a UserError naming a few (``decode_images``)."""
    root, members = image_files(source)
    size, channels = classifier.input_shape[0], classifier.input_shape[-1]
    ((images, ok),) = decode_images(root, [("images", members)], size, channels)
    names = [m for m, good in zip(members, ok) if good]
    return classifier.top_k(classifier.probabilities(images), names, k)


def write_csv(table, path: str | Path) -> Path:
    return write_atomic(Path(path), lambda tmp: table.to_csv(tmp, index=False))
