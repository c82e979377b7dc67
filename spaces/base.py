"""The one interface a search space implements."""

from __future__ import annotations

import abc
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import keras
import optuna

from search.errors import UserError


@dataclass
class Candidate:
    """A compiled Keras model for one trial, and the batch size to fit it with.

    The model takes raw uint8 images of the dataset's shape and outputs class
    probabilities (softmax); it is compiled with an ``accuracy`` metric.
    """

    model: keras.Model
    batch_size: int


class SearchSpace(abc.ABC):
    """A family of image classifiers that Optuna samples from.

    Subclasses are dataclasses whose fields are the space's fixed settings
    (``settings()``); everything else about a model comes from ``trial.suggest_*`` calls
    in ``build``, so the fixed settings plus ``trial.params`` rebuild the model exactly
    (``optuna.trial.FixedTrial(params)`` replays a trial).
    """

    #: Smallest image side (pixels) this space can build a model for.
    min_image_size: ClassVar[int] = 1

    @abc.abstractmethod
    def build(self, trial: optuna.Trial, image_shape: tuple[int, int, int], num_classes: int) -> Candidate:
        """Sample this trial's hyperparameters and return the compiled model."""

    def initial_params(self, image_shape: tuple[int, int, int]) -> list[dict]:
        """Known-good configurations, queued as the first trials of a new study.

        Each dict maps param names to values that ``build`` would accept for images of
        ``image_shape``; params it leaves out are sampled. The default queues none.
        """
        return []

    def settings(self) -> dict:
        """The fixed settings of this space (its dataclass fields)."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    def check_image_size(self, image_shape: tuple[int, int, int], name: str) -> None:
        """Raise UserError when images are smaller than this space can handle."""
        if min(image_shape[:2]) < self.min_image_size:
            raise UserError(
                f"IMAGE_SIZE={min(image_shape[:2])} is below {self.min_image_size}, "
                f"the smallest image the {name} space can build a model for"
            )
