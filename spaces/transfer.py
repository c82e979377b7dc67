"""Transfer learning made cheap: a head trained on a frozen backbone's kept features, then, for
the trials that sample it, the top of the backbone fine-tuned from that head.

Phase "head" trains a small head on the backbone's pooled features (``spaces/features.py``:
computed once, then a head epoch on 4,500 images takes a fraction of a second), so the search
can try many heads. Phase "finetune" (``finetune_share`` of the epochs, when sampled above 0)
unfreezes the top ``unfreeze_fraction`` of the backbone's layers and trains on the images,
starting from the trained head. Either way the trial's model is one Keras model on raw uint8
images: input, resize, the backbone's preprocessing, the backbone, pooling, the head (the same
layers the head phase trained).
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

from imgsearch.spaces.backbones import ZOO, BackbonePreprocess, WeightsUnavailable, load_backbone, weights_file
from imgsearch.spaces.base import Candidate, Phase, SearchSpace
from imgsearch.spaces.catalog import parse_backbones
from imgsearch.spaces.common import SparseCrossentropyWithSmoothing, recompile
from imgsearch.spaces.features import frozen_features, images_to_compute
from imgsearch.spaces.finetune import tunable_layers, unfreeze
from imgsearch.spaces.scale import FEATURE_SECONDS_160
from imgsearch.storage.errors import UserError

RESOLUTIONS = (96, 128, 160, 224)
OPTIMIZERS = ("adam", "adamw")
BATCH_SIZES = (32, 64, 128, 256)
FINETUNE_SHARES = (0.0, 0.25, 0.5)
UNFREEZE_FRACTIONS = (0.1, 0.25, 0.5)
# Fine-tuning trains on images at this batch size: the backbone's activations at 224 px bound it.
FINETUNE_BATCH = 32


@dataclass
class TransferCandidate(Candidate):
    """The full image model (``model``), the head alone on features (``head``), and the data the head trains on."""

    head: keras.Model | None = None
    feature_args: tuple = ()
    on_images: bool = False

    @property
    def image_batch_size(self) -> int:
        return min(self.batch_size, FINETUNE_BATCH) if len(self.phases) > 1 else 0


@dataclass(kw_only=True)
class TransferSpace(SearchSpace):
    """A pretrained backbone from ``backbones`` (names or families) whose weights can be loaded here
    (``weights``, from ``weights_dir`` when given), frozen; a head on its kept features; optionally
    its top layers fine-tuned."""

    backbones: str | None
    weights: str
    weights_dir: str | None
    location_options = ("weights_dir",)

    def __post_init__(self):
        names = parse_backbones(self.backbones)
        if self.weights == "imagenet" and self.weights_dir:  # only those whose file is there
            names = [name for name in names if weights_file(ZOO[name], self.weights_dir).is_file()]
            if not names:
                raise WeightsUnavailable(f"no backbone of BACKBONES={self.backbones or 'all'} has its weights file "
                                         f"in WEIGHTS_DIR={self.weights_dir}")
        self.backbones = ",".join(names)
        self._data = None

    @property
    def choice(self) -> list[str]:
        return self.backbones.split(",")

    def prepare(self, data) -> None:
        self._data = data

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """The lightest backbone, a linear head: seconds a trial once its features are kept. At 160
        px with flips; with a budget, at the resolution whose features fit its share of it, and
        on large data without flips (``DataScale.feature_resolution``)."""
        resolution = scale.feature_resolution(RESOLUTIONS, 160) if scale is not None else 160
        return [{"backbone": self.choice[0], "resolution": resolution, "head_layers": 0, "head_dropout": 0.2,
                 "aug_flip": not (scale is not None and scale.large), "optimizer": "adam", "learning_rate": 1e-3,
                 "weight_decay": 1e-5, "label_smoothing": 0.1, "batch_size": 64, "finetune_share": 0.0}]

    def build(self, trial, image_shape, num_classes) -> Candidate:
        name = trial.suggest_categorical("backbone", self.choice)
        resolution = trial.suggest_categorical("resolution", RESOLUTIONS)
        backbone = load_backbone(name, self.weights, self.weights_dir)
        tunable = tunable_layers(backbone)
        backbone.trainable = False
        width = backbone.output_shape[-1]

        head_layers = []
        if trial.suggest_int("head_layers", 0, 1):
            head_layers.append(layers.Dense(trial.suggest_categorical("head_units", [128, 256, 512]),
                                            activation="relu", name="head_dense"))
        head_layers += [layers.Dropout(trial.suggest_float("head_dropout", 0.0, 0.5), name="head_dropout"),
                        layers.Dense(num_classes, activation="softmax", name="probabilities")]

        def head_on(x):
            for layer in head_layers:
                x = layer(x)
            return x

        features_in = keras.Input(shape=(width,), name="features")
        head = keras.Model(features_in, head_on(features_in), name=f"head_{name}")
        flip = trial.suggest_categorical("aug_flip", [False, True])
        inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
        x = layers.Rescaling(1.0, name="to_float")(inputs)
        if flip:
            x = layers.RandomFlip("horizontal", name="flip")(x)
        if image_shape[-1] == 1:
            x = layers.Concatenate(name="gray_to_rgb")([x, x, x])
        if tuple(image_shape[:2]) != (resolution, resolution):
            x = layers.Resizing(resolution, resolution, name="resize")(x)
        x = BackbonePreprocess(name, name="preprocess")(x)
        x = layers.GlobalAveragePooling2D(name="pool")(backbone(x))
        model = keras.Model(inputs, head_on(x), name=f"transfer_{name}")

        optimizer = trial.suggest_categorical("optimizer", OPTIMIZERS)
        learning_rate = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
        weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True)
        smoothing = trial.suggest_float("label_smoothing", 0.0, 0.2)
        make = keras.optimizers.Adam if optimizer == "adam" else keras.optimizers.AdamW
        loss = SparseCrossentropyWithSmoothing(smoothing)
        head.compile(optimizer=make(learning_rate, weight_decay=weight_decay), loss=loss, metrics=["accuracy"])
        model.compile(optimizer=make(learning_rate, weight_decay=weight_decay), loss=loss, metrics=["accuracy"])
        batch_size = trial.suggest_categorical("batch_size", BATCH_SIZES)

        share = trial.suggest_categorical("finetune_share", FINETUNE_SHARES)
        candidate = TransferCandidate(model, batch_size, (Phase("head", 1 - share),),
                                      {"backbone_layers": len(tunable)}, head=head,
                                      feature_args=(name, self.weights, self.weights_dir, resolution, flip))
        if self._data is not None:  # the features it would compute first, at the measured pace (spaces/scale.py)
            images = images_to_compute(name, self.weights, self.weights_dir, resolution, self._data, flip)
            candidate.preparation_seconds = images * FEATURE_SECONDS_160 * (resolution / 160) ** 2
        if share:
            fraction = trial.suggest_categorical("unfreeze_fraction", UNFREEZE_FRACTIONS)
            factor = trial.suggest_float("finetune_lr_factor", 0.01, 0.3, log=True)
            top = tunable[len(tunable) - max(1, round(fraction * len(tunable))):]
            candidate.details.update(unfreeze_layers=len(top), finetune_learning_rate=learning_rate * factor)

            def start_finetune():
                unfreeze(backbone, top)
                recompile(model, learning_rate * factor)
                candidate.on_images = True

            candidate.phases = (*candidate.phases, Phase("finetune", share, start_finetune))
        return candidate

    def fit(self, trial, candidate: TransferCandidate, **fit_kwargs) -> keras.Model:
        """The head phase fits ``candidate.head`` on the kept features (and, with flips, the flipped
        images' features too); the finetune phase fits the whole model on the images."""
        if candidate.on_images:
            candidate.model.fit(**{**fit_kwargs, "batch_size": min(fit_kwargs["batch_size"], FINETUNE_BATCH)})
            return candidate.model
        if self._data is None:
            raise UserError("the transfer space was not given the dataset (SearchSpace.prepare)")
        name, weights, weights_dir, resolution, flip = candidate.feature_args
        data = self._data
        kept = frozen_features(name, weights, weights_dir, resolution, data, flipped=flip)
        x, y = kept.train, np.asarray(data.y_train)
        if flip:
            x, y = np.concatenate([x, kept.train_flipped]), np.concatenate([y, y])
        candidate.head.fit(**{**fit_kwargs, "x": x, "y": y, "validation_data": (kept.val, np.asarray(data.y_val))})
        return candidate.model
