"""The one interface a search space implements."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import keras
import optuna

from imgsearch.spaces.scale import DataScale
from imgsearch.storage.errors import UserError


@dataclass
class Phase:
    """One ``fit`` of a trial's training.

    ``share`` is its part of the trial's epochs; ``start`` (when given) gets the model
    ready for it before the fit: freezes or unfreezes layers and compiles the model again.
    """

    name: str
    share: float
    start: Callable[[], None] | None = None


@dataclass
class Candidate:
    """A compiled Keras model for one trial, the batch size to fit it with, and how to train it.

    The model takes raw uint8 images of the dataset's shape and outputs class
    probabilities (softmax); it is compiled with an ``accuracy`` metric. ``phases`` run
    one after the other under one continuous epoch count (shares sum to 1). ``details``
    are values derived from the sampled params (layer counts, say) that are worth logging
    next to them.

    ``model`` is None for a space whose library builds the model while it trains (its
    ``SearchSpace.fit`` makes it); nothing outside that space's module looks at it.
    """

    model: keras.Model | None
    batch_size: int
    phases: tuple[Phase, ...] = (Phase("train", 1.0),)
    details: dict = field(default_factory=dict)
    #: Seconds its space foresees it spending before its first batch (a backbone's features
    #: still to compute): a trial that could not train after them in its time is skipped.
    preparation_seconds: float = 0.0

    @property
    def image_batch_size(self) -> int:
        """The batch size ``model`` trains on images at (what its memory grows with); 0 when it
        never trains on images itself (a head trained on kept features)."""
        return self.batch_size


class SearchSpace(abc.ABC):
    """A family of image classifiers that Optuna samples from.

    Subclasses are dataclasses whose fields are the space's options, keyword-only and
    without defaults: each is a setting (a flag and environment variable of the same name)
    declared, with its default and checks, in ``search/settings.py``. ``settings()`` are the
    options that define what the space is; everything else about a model comes from
    ``trial.suggest_*`` calls in ``build``, so the settings plus ``trial.params`` rebuild the
    model exactly (``optuna.trial.FixedTrial(params)`` replays a trial).
    """

    #: Smallest image side (pixels) this space can build a model for.
    min_image_size: ClassVar[int] = 1
    #: Options that say where things are on this machine (a folder, say), not what the
    #: space is: not part of ``settings()``, so each worker may set its own.
    location_options: ClassVar[tuple[str, ...]] = ()
    #: Whether a search with a BUDGET ends with an ensemble of its best models, when that beats
    #: the best single one (search/trials/ensemble.py).
    ends_with_ensemble: ClassVar[bool] = False
    #: The categorical parameter that picks a family of models, when the space has one: the
    #: study chooses it from what each family has shown (search/trials/families.py).
    family_param: ClassVar[str | None] = None

    @abc.abstractmethod
    def build(self, trial: optuna.Trial, image_shape: tuple[int, int, int], num_classes: int) -> Candidate:
        """Sample this trial's hyperparameters and return the compiled model."""

    def fit(self, trial: optuna.Trial, candidate: Candidate, **fit_kwargs) -> keras.Model:
        """Train ``candidate`` through one phase; return the trained Keras model.

        ``fit_kwargs`` are ``keras.Model.fit``'s (x, y, batch_size, initial_epoch, epochs,
        validation_data, callbacks, verbose), and every callback must see every epoch. The
        default fits ``candidate.model``; a space whose library builds and trains the model
        itself overrides this, as KerasTuner's ``HyperModel.fit`` allows, and may sample
        more of ``trial``'s params while it runs.
        """
        candidate.model.fit(**fit_kwargs)
        return candidate.model

    def prepare(self, data) -> None:
        """Called once with the search's ``Dataset`` before its first trial, for a space that keeps
        something computed from the data (``TransferSpace``: a backbone's features). The default
        keeps nothing."""

    def initial_params(self, image_shape: tuple[int, int, int], scale: DataScale | None = None) -> list[dict]:
        """Known-good configurations, queued as the first trials of a new study.

        Each dict maps param names to values that ``build`` would accept for images of
        ``image_shape``; params it leaves out are sampled. ``scale`` (the data's size and the
        budget; None: the 10-class sample's, no budget) sizes them (spaces/scale.py). The
        default queues none.
        """
        return []

    def settings(self) -> dict:
        """The options that define this space (its dataclass fields but the location ones)."""
        if not dataclasses.is_dataclass(self):
            return {}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in self.location_options}

    def check_ready(self) -> list[str]:
        """Check, before a search starts, that this machine can build this space's models.

        Returns notes worth printing (what will not work and why); raises UserError when
        no model of the space can be built here, so a search stops at once instead of
        failing every trial. The default has nothing to check.
        """
        return []

    def check_image_size(self, image_shape: tuple[int, int, int], name: str) -> None:
        """Raise UserError when images are smaller than this space can handle."""
        if min(image_shape[:2]) < self.min_image_size:
            raise UserError(
                f"IMAGE_SIZE={min(image_shape[:2])} is below {self.min_image_size}, "
                f"the smallest image the {name} space can build a model for"
            )
