"""SPACE=auto: one study over every family of model this product builds, and the budget spent where
it pays.

A trial's first choice is the family: ``cnn`` (networks from scratch), ``transfer`` (a pretrained
backbone's kept features and a head, optionally its top fine-tuned: only where some backbone's
weights can be loaded) and ``autokeras``. Then it samples that family's own parameters under
names of their own (``cnn/filters``, ``transfer/learning_rate``), so Optuna's TPE models each
family apart, as its conditional search spaces do. The families a study searches are
recorded with it (``families``): a resumed study, or a worker elsewhere, searches the same.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import optuna

from imgsearch.spaces.scale import FRACTION_ATTR
from imgsearch.spaces.autokeras_space import AutoKerasSpace, WEIGHTS_HOST
from imgsearch.spaces.base import Candidate, SearchSpace
from imgsearch.spaces.catalog import FAMILY_NAMES, parse_families
from imgsearch.spaces.cnn import CNNSpace
from imgsearch.spaces.transfer import TransferSpace
from imgsearch.storage.errors import UserError

SEPARATOR = "/"
KERAS_CACHE = Path("~/.keras/models").expanduser()  # where Keras keeps the weights it downloads


class FamilyTrial:
    """``trial`` seen by one family's space: every parameter it suggests or reads is named
    ``<family>/<name>`` in the study. Everything else (reporting, user attrs) is the trial's own."""

    def __init__(self, trial: optuna.Trial, family: str):
        self._trial, self._prefix = trial, family + SEPARATOR

    def suggest_categorical(self, name, choices):
        return self._trial.suggest_categorical(self._prefix + name, choices)

    def suggest_int(self, name, low, high, **kwargs):
        return self._trial.suggest_int(self._prefix + name, low, high, **kwargs)

    def suggest_float(self, name, low, high, **kwargs):
        return self._trial.suggest_float(self._prefix + name, low, high, **kwargs)

    @property
    def params(self) -> dict:
        return {k[len(self._prefix):]: v for k, v in self._trial.params.items() if k.startswith(self._prefix)}

    def __getattr__(self, name):
        return getattr(self._trial, name)


def prefixed(family: str, params: dict) -> dict:
    """A family's parameters as the study names them, with the family chosen (a starting point's
    share of the training images, not a parameter, keeps its name: spaces/scale.py)."""
    return {"family": family, **{k if k == FRACTION_ATTR else f"{family}{SEPARATOR}{k}": v
                                 for k, v in params.items()}}


def _online() -> bool:
    try:
        urllib.request.urlopen(WEIGHTS_HOST, timeout=5).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False
    return True


@dataclass(kw_only=True)
class AutoSpace(SearchSpace):
    """The families in ``families`` (comma-separated; None: every one that can run here, decided
    when the study is created), each with its space's options."""

    families: str | None
    max_blocks: int
    backbones: str | None
    weights: str
    weights_dir: str | None
    max_model_size: int | None
    pretrained: str
    location_options = ("weights_dir",)
    ends_with_ensemble = True
    family_param = "family"

    def __post_init__(self):
        self.cnn = CNNSpace(max_blocks=self.max_blocks)
        self.autokeras = AutoKerasSpace(max_model_size=self.max_model_size, pretrained=self.pretrained)
        self.transfer, self.skipped = None, []
        weights_dir = self.weights_dir
        if self.weights == "imagenet" and not weights_dir and not _online():
            weights_dir = str(KERAS_CACHE)  # offline: the weights Keras downloaded before, if any
        try:
            self.transfer = TransferSpace(backbones=self.backbones, weights=self.weights, weights_dir=weights_dir)
        except UserError as exc:
            offline = weights_dir != self.weights_dir
            self.skipped.append("transfer: no WEIGHTS_DIR, and Keras can neither download weights here nor has "
                                f"any in {KERAS_CACHE}" if offline else f"transfer: {exc}")
        if self.families is None:  # a new study: every family that can run here
            self.families = ",".join(f for f in FAMILY_NAMES if f != "transfer" or self.transfer is not None)
        self.families = ",".join(parse_families(self.families))
        if "transfer" in self.choice and self.transfer is None:
            raise UserError(f"FAMILIES={self.families}: the transfer family cannot run here ({self.skipped[0]})")
        if self.transfer is not None:
            self.backbones = self.transfer.backbones

    @property
    def choice(self) -> list[str]:
        return self.families.split(",")

    def space(self, family: str) -> SearchSpace:
        return {"cnn": self.cnn, "transfer": self.transfer, "autokeras": self.autokeras}[family]

    def check_ready(self) -> list[str]:
        notes = [f"family left out, {why}" for why in self.skipped]
        for family in self.choice:
            notes += [f"{family}: {note}" for note in self.space(family).check_ready()]
        return notes

    def prepare(self, data) -> None:
        for family in self.choice:
            self.space(family).prepare(data)

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """The portfolio across families, the cheapest strong start of each, best per second first:
        a linear head on kept features (seconds), the plain 32-filter CNN, then the plain 48;
        without the transfer family, the cnn space's whole portfolio (the residual net too)."""
        portfolio = []
        if "transfer" in self.choice:
            portfolio += [prefixed("transfer", p) for p in self.transfer.initial_params(image_shape, scale)]
        if "cnn" in self.choice:
            cnn = self.cnn.initial_params(image_shape, scale)
            portfolio += [prefixed("cnn", p) for p in (cnn[:2] if portfolio else cnn)]
        return portfolio

    def build(self, trial, image_shape, num_classes) -> Candidate:
        family = trial.suggest_categorical(self.family_param, self.choice)
        return self.space(family).build(FamilyTrial(trial, family), image_shape, num_classes)

    def fit(self, trial, candidate, **fit_kwargs):
        family = trial.params["family"]
        return self.space(family).fit(FamilyTrial(trial, family), candidate, **fit_kwargs)

    def check_image_size(self, image_shape, name: str) -> None:
        self.cnn.check_image_size(image_shape, name)
