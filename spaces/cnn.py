"""Convolutional networks trained from scratch: plain (VGG-style) or residual (ResNet-style) stages.

The space keeps only the region where small CNNs train well in a few epochs on a CPU
budget (measured: docs/defaults.md): batch norm after every conv,
3x3 kernels, flip and shift augmentation, a warmup + cosine learning-rate schedule (set by
the training loop), and per-optimizer learning-rate ranges. Left out, as measured searches
wasted budgets on them: no batch norm at a high learning rate (chance), 7x7 kernels (over 500 s
an epoch); and rotation and zoom (not measured: costly per batch on a CPU, with flip and shift
already there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from imgsearch.spaces.scale import FRACTION_ATTR
from imgsearch.spaces.base import Candidate, SearchSpace
from imgsearch.spaces.common import BN_MOMENTUM, SparseCrossentropyWithSmoothing, image_input

FAMILIES = ("residual", "plain")
ACTIVATIONS = ("relu", "swish")
WIDTHS = (16, 24, 32, 48, 64)
BATCH_SIZES = (64, 128, 256)
OPTIMIZERS = ("sgd", "adamw")
# Peak learning rate of the schedule, by optimizer: SGD with Nesterov momentum needs one
# about 50x AdamW's.
LEARNING_RATES = {"sgd": (0.02, 0.4), "adamw": (5e-4, 8e-3)}
WEIGHT_DECAYS = {"sgd": (5e-5, 2e-3), "adamw": (1e-3, 0.1)}


def conv_bn(x, width: int, activation: str, name: str):
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return layers.Activation(activation, name=f"{name}_act")(x)


def residual_unit(x, width: int, activation: str, name: str):
    """Two 3x3 conv-BN-activation layers with an identity shortcut (ResNet-9's unit)."""
    y = conv_bn(x, width, activation, f"{name}a")
    y = conv_bn(y, width, activation, f"{name}b")
    return layers.Add(name=f"{name}_add")([x, y])


@dataclass(kw_only=True)
class CNNSpace(SearchSpace):
    """``conv_blocks`` stages, each halving the resolution, then global pooling and a softmax.

    A ``plain`` stage is ``convs_per_block`` conv-BN-activation layers and a max pool. A
    ``residual`` stage is one conv-BN-activation layer and a max pool followed by
    ``convs_per_block`` residual units (two convs and an identity shortcut). Widths start at
    ``filters`` and double per stage. ``max_blocks`` caps the stages; the image size caps
    them further so the last stage still sees at least 2x2 pixels.
    """

    max_blocks: int
    min_image_size = 8

    def _block_cap(self, image_shape) -> int:
        return min(self.max_blocks, max(1, int(math.log2(min(image_shape[:2]))) - 1))

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """The starting portfolio, queued in this order: the configurations that did best per
        second on the Tiny ImageNet sample (docs/defaults.md)."""
        stages = min(3, self._block_cap(image_shape))
        recipe = {"aug_flip": True, "aug_translation": 0.125, "conv_blocks": stages, "convs_per_block": 1,
                  "block_dropout": 0.0, "activation": "relu", "head_dropout": 0.2, "optimizer": "sgd",
                  "sgd_learning_rate": 0.1, "sgd_weight_decay": 5e-4, "label_smoothing": 0.1, "batch_size": 128}
        # On large data (spaces/scale.py) the first trains on all the images, the others explore
        # on a share of them, as sampled trials do; the best are then trained on all.
        explore = {FRACTION_ATTR: scale.exploring} if scale is not None and scale.large else {}
        return [
            {**recipe, "family": "plain", "filters": 32},  # the strongest per second: done first
            {**recipe, "family": "plain", "filters": 48, **explore},  # wider: slower, better with the time
            {**recipe, "family": "residual", "filters": 16, **explore},  # the other family, for the sampler
        ]

    def build(self, trial, image_shape, num_classes) -> Candidate:
        inputs, x = image_input(image_shape)
        if trial.suggest_categorical("aug_flip", [False, True]):
            x = layers.RandomFlip("horizontal")(x)
        shift = trial.suggest_categorical("aug_translation", [0.0, 0.0625, 0.125])
        if shift:
            x = layers.RandomTranslation(shift, shift, fill_mode="reflect")(x)
        family = trial.suggest_categorical("family", FAMILIES)
        stages = trial.suggest_int("conv_blocks", 1, self._block_cap(image_shape))
        width = trial.suggest_categorical("filters", WIDTHS)
        depth = trial.suggest_int("convs_per_block", 1, 2)
        dropout = trial.suggest_float("block_dropout", 0.0, 0.3)
        activation = trial.suggest_categorical("activation", ACTIVATIONS)
        if family == "residual":
            x = conv_bn(x, width, activation, "stem")
        for stage in range(stages):
            channels = min(512, width * 2**stage)
            if family == "residual":
                x = conv_bn(x, channels, activation, f"stage{stage}")
                x = layers.MaxPooling2D(2)(x)
                for unit in range(depth):
                    x = residual_unit(x, channels, activation, f"stage{stage}_unit{unit}")
            else:
                for conv in range(depth):
                    x = conv_bn(x, channels, activation, f"stage{stage}_{conv}")
                x = layers.MaxPooling2D(2)(x)
            if dropout:
                x = layers.Dropout(dropout)(x)
        x = layers.GlobalMaxPooling2D()(x) if family == "residual" else layers.GlobalAveragePooling2D()(x)
        x = layers.Dropout(trial.suggest_float("head_dropout", 0.0, 0.5))(x)
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        model = keras.Model(inputs, outputs, name=f"cnn_{family}")
        name = trial.suggest_categorical("optimizer", OPTIMIZERS)
        # Named per optimizer: one name over two ranges would mix them in the sampler's model.
        learning_rate = trial.suggest_float(f"{name}_learning_rate", *LEARNING_RATES[name], log=True)
        weight_decay = trial.suggest_float(f"{name}_weight_decay", *WEIGHT_DECAYS[name], log=True)
        optimizer = (keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=weight_decay)
                     if name == "sgd" else keras.optimizers.AdamW(learning_rate, weight_decay=weight_decay))
        smoothing = trial.suggest_float("label_smoothing", 0.0, 0.2)
        model.compile(optimizer=optimizer, loss=SparseCrossentropyWithSmoothing(smoothing), metrics=["accuracy"])
        return Candidate(model, trial.suggest_categorical("batch_size", BATCH_SIZES))
