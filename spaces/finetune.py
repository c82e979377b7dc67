"""Fine-tuning of pretrained keras.applications backbones: frozen, then the top layers unfrozen."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from imgsearch.storage.errors import UserError
from imgsearch.spaces.backbones import (ZOO, BackbonePreprocess, WeightsUnavailable, cut_blocks,
                              load_backbone, weights_file, weights_path)
from imgsearch.spaces.base import Candidate, Phase, SearchSpace
from imgsearch.spaces.catalog import parse_backbones
from imgsearch.spaces.common import TRAINING_START, augment, compile_classifier, dense_head, image_input, recompile

RESOLUTIONS = (96, 128, 160, 224)
MAX_CUT_BLOCKS = 3
# Smaller than the CNN space's: a 224 px ResNet50 batch of 256 does not fit in a small machine's memory.
BATCH_SIZES = (16, 32, 64)
FROZEN_EPOCH_SHARES = (0.25, 0.5, 0.75, 1.0)
UNFREEZE_FRACTIONS = (0.1, 0.25, 0.5, 1.0)


def tunable_layers(backbone: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers with weights that can train (frozen or not), batch norm excluded, bottom to top."""
    return [layer for layer in backbone.layers
            if any(w.trainable for w in layer.weights) and not isinstance(layer, layers.BatchNormalization)]


def unfreeze(backbone: keras.Model, top: list[keras.layers.Layer]) -> None:
    """Make exactly the ``top`` layers of ``backbone`` trainable.

    Batch norm layers stay frozen and so, in Keras 3, run in inference mode: their
    moving statistics never move, whatever the batch size.
    """
    chosen = {id(layer) for layer in top}
    backbone.trainable = True
    for layer in backbone.layers:
        layer.trainable = id(layer) in chosen


@dataclass(kw_only=True)
class FinetuneSpace(SearchSpace):
    """A pretrained backbone (sampled from ``backbones``), resized input, a new head, two phases.

    Phase "frozen": the backbone is frozen and the head trains at the sampled learning
    rate. Phase "finetune" (unless the sampled ``frozen_epoch_share`` is 1): the top
    ``unfreeze_fraction`` of the backbone's layers train too, at the learning rate times
    ``finetune_lr_factor``. ``backbones`` names backbones or families (see
    ``spaces.backbones.ZOO``); a family with several variants (MobileNet's widths) is
    narrowed to the variants whose file is in ``weights_dir`` when one is given and
    holds any.
    """

    backbones: str | None
    weights: str
    weights_dir: str | None
    location_options = ("weights_dir",)

    def __post_init__(self):
        names = parse_backbones(self.backbones, self._has_file if self._from_folder else None)
        self.backbones = ",".join(names)

    @property
    def _from_folder(self) -> bool:
        return self.weights == "imagenet" and bool(self.weights_dir)

    def _has_file(self, name: str) -> bool:
        return weights_file(ZOO[name], self.weights_dir).is_file()

    @property
    def choice(self) -> list[str]:
        return self.backbones.split(",")

    def check_ready(self) -> list[str]:
        if self.weights == "none":
            return []
        problems = {}
        for name in self.choice:
            try:
                if self._from_folder:
                    weights_path(ZOO[name], self.weights_dir)
                else:
                    load_backbone(name, self.weights)
                    keras.backend.clear_session()
                    break  # it downloads (or is in Keras's cache): no need to fetch the others now
            except WeightsUnavailable as exc:
                problems[name] = str(exc)
        if len(problems) == len(self.choice):
            raise UserError("no backbone in the choice can load its weights: " + "; ".join(problems.values()))
        return [f"{problem}; trials that sample {name} will fail" for name, problem in problems.items()]

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """The lightest backbone that can load, frozen for half the epochs, then its top quarter tuned."""
        loadable = [name for name in self.choice if not self._from_folder or self._has_file(name)]
        return [{
            "backbone": (loadable or self.choice)[0], "resolution": 128, "cut_blocks": 0,
            "aug_flip": True, "aug_rotation": 0.0, "aug_zoom": 0.0, "aug_translation": 0.0,
            "head_pooling": "gap", "head_layers": 0, "frozen_epoch_share": 0.5, "unfreeze_fraction": 0.25,
            "finetune_lr_factor": 0.1, **TRAINING_START,
        }]

    def build(self, trial, image_shape, num_classes) -> Candidate:
        name = trial.suggest_categorical("backbone", self.choice)
        resolution = trial.suggest_categorical("resolution", RESOLUTIONS)
        cut = trial.suggest_int("cut_blocks", 0, MAX_CUT_BLOCKS)
        backbone = cut_blocks(load_backbone(name, self.weights, self.weights_dir), name, cut)
        tunable = tunable_layers(backbone)
        backbone.trainable = False

        inputs, x = image_input(image_shape, scale=1.0)  # the backbone's preprocessing expects 0..255
        x = augment(trial, x)
        if image_shape[-1] == 1:
            x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        if tuple(image_shape[:2]) != (resolution, resolution):
            x = layers.Resizing(resolution, resolution, name="resize")(x)
        x = BackbonePreprocess(name, name="preprocess")(x)
        x = backbone(x)
        pooling = trial.suggest_categorical("head_pooling", ["gap", "flatten"])
        x = layers.GlobalAveragePooling2D()(x) if pooling == "gap" else layers.Flatten()(x)
        outputs = dense_head(trial, x, num_classes, "relu", max_layers=2)
        model = keras.Model(inputs, outputs, name=f"finetune_{name}")
        batch_size = compile_classifier(trial, model, BATCH_SIZES)

        frozen_share = trial.suggest_categorical("frozen_epoch_share", FROZEN_EPOCH_SHARES)
        phases = [Phase("frozen", frozen_share)]
        details = {"backbone_layers": len(tunable)}
        if frozen_share < 1:
            fraction = trial.suggest_categorical("unfreeze_fraction", UNFREEZE_FRACTIONS)
            factor = trial.suggest_float("finetune_lr_factor", 0.01, 0.3, log=True)
            top = tunable[len(tunable) - max(1, round(fraction * len(tunable))):]
            learning_rate = trial.params["learning_rate"] * factor
            details.update(unfreeze_layers=len(top), finetune_learning_rate=learning_rate)

            def start_finetune():
                unfreeze(backbone, top)
                recompile(model, learning_rate)

            phases.append(Phase("finetune", 1 - frozen_share, start_finetune))
        return Candidate(model, batch_size, tuple(phases), details)
