"""Search spaces. Add one: a module with a SearchSpace subclass, one line in SPACES, and a line in
search/settings.py for each of its options."""

from __future__ import annotations

import dataclasses
import zipfile
from pathlib import Path

import keras

from storage.errors import UserError
from spaces.autokeras_space import AutoKerasSpace
from spaces.base import Candidate, Phase, SearchSpace
from spaces.cnn import CNNSpace
from spaces.finetune import FinetuneSpace
from spaces.mlp import MLPSpace

SPACES: dict[str, type[SearchSpace]] = {
    "cnn": CNNSpace,
    "mlp": MLPSpace,
    "finetune": FinetuneSpace,
    "autokeras": AutoKerasSpace,
}


def space_class(name: str) -> type[SearchSpace]:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"unknown SPACE {name!r}; choose one of: {', '.join(SPACES)}") from None


def space_options(name: str) -> list[str]:
    """The options (constructor arguments) of the space registered as ``name``."""
    return [f.name for f in dataclasses.fields(space_class(name))]


def load_model(path: str | Path, compile: bool = True) -> keras.Model:
    """``keras.saving.load_model`` for any model a space built (a checkpoint or an export).

    Importing ``spaces`` registers our own layers and loss. AutoKeras registers its layers
    when it is imported, which takes seconds, so that happens only for a model using them.
    """
    with zipfile.ZipFile(path) as archive:
        if b'"module": "autokeras' in archive.read("config.json"):
            import autokeras  # noqa: F401
    return keras.saving.load_model(path, compile=compile)


__all__ = ["SPACES", "Candidate", "Phase", "SearchSpace", "load_model", "space_class", "space_options"]
