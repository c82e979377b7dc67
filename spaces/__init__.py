"""Search spaces. Add one: a module with a SearchSpace subclass, one line in
``spaces/catalog.py``'s SPACE_CLASSES, and a line in search/settings.py for each of its options.

Importing ``spaces`` is cheap: the space classes, and Keras with them, are imported when
first used (``spaces.SPACES``, ``space_class``, ``load_model``), so the command line checks
its input before TensorFlow starts.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

from imgsearch.spaces.catalog import SPACE_CLASSES, SPACE_NAMES
from imgsearch.storage.errors import UserError


def space_class(name: str):
    """The SearchSpace subclass registered as ``name``."""
    try:
        module, cls = SPACE_CLASSES[name]
    except KeyError:
        raise UserError(f"unknown SPACE {name!r}; choose one of: {', '.join(SPACE_NAMES)}") from None
    return getattr(importlib.import_module(module), cls)


def load_model(path: str | Path, compile: bool = True):
    """``keras.saving.load_model`` for any model a space built (a checkpoint or an export).

    Importing ``spaces.common`` registers our own layers and loss. AutoKeras registers its
    layers when it is imported, which takes seconds, so that happens only for a model using them.
    """
    import keras

    import imgsearch.spaces.backbones  # noqa: F401  (registers BackbonePreprocess)
    import imgsearch.spaces.common  # noqa: F401  (registers the loss)

    with zipfile.ZipFile(path) as archive:
        if b'"module": "autokeras' in archive.read("config.json"):
            import autokeras  # noqa: F401
    return keras.saving.load_model(path, compile=compile)


def __getattr__(name: str):
    """``SPACES`` (name -> class) and the interface (``SearchSpace``, ``Candidate``, ``Phase``), on first use."""
    if name == "SPACES":
        return {space: space_class(space) for space in SPACE_NAMES}
    if name in ("SearchSpace", "Candidate", "Phase"):
        return getattr(importlib.import_module("imgsearch.spaces.base"), name)
    raise AttributeError(f"module 'spaces' has no attribute {name!r}")


__all__ = ["SPACES", "SPACE_NAMES", "Candidate", "Phase", "SearchSpace", "load_model", "space_class"]
