"""Hand-built convolutional networks: conv blocks, then a dense head."""

from __future__ import annotations

import math
from dataclasses import dataclass

import keras
from keras import layers

from spaces.base import Candidate, SearchSpace
from spaces.common import BN_MOMENTUM, TRAINING_START, augment, compile_classifier, dense_head, image_input

ACTIVATIONS = ("relu", "elu", "gelu", "swish")


@dataclass
class CNNSpace(SearchSpace):
    """Conv blocks (each halves the resolution) + a dense head.

    ``max_blocks`` caps the depth; the image size caps it further so the last
    block still sees at least 2x2 pixels.
    """

    max_blocks: int = 4
    min_image_size = 8

    def _block_cap(self, image_shape) -> int:
        return min(self.max_blocks, max(1, int(math.log2(min(image_shape[:2]))) - 1))

    def initial_params(self, image_shape) -> list[dict]:
        """A plain VGG-like net: 32 filters doubling per block, batch norm, GAP, one dense layer."""
        return [{
            "aug_flip": True, "aug_rotation": 0.0, "aug_zoom": 0.0, "aug_translation": 0.0,
            "conv_blocks": min(3, self._block_cap(image_shape)), "filters": 32, "filter_growth": 2.0,
            "kernel_size": 3, "convs_per_block": 1, "batch_norm": True, "pooling": "max", "block_dropout": 0.1,
            "activation": "relu", "head_pooling": "flatten", "head_layers": 1, "head_units": 128,
            "head_dropout": 0.3, **TRAINING_START,
        }]

    def build(self, trial, image_shape, num_classes) -> Candidate:
        inputs, x = image_input(image_shape)
        x = augment(trial, x)
        n_blocks = trial.suggest_int("conv_blocks", 1, self._block_cap(image_shape))
        filters = trial.suggest_categorical("filters", [16, 32, 64])
        growth = trial.suggest_categorical("filter_growth", [1.0, 1.5, 2.0])
        kernel = trial.suggest_categorical("kernel_size", [3, 5, 7])
        convs = trial.suggest_int("convs_per_block", 1, 2)
        batch_norm = trial.suggest_categorical("batch_norm", [False, True])
        pooling = trial.suggest_categorical("pooling", ["max", "avg"])
        dropout = trial.suggest_float("block_dropout", 0.0, 0.3)
        activation = trial.suggest_categorical("activation", ACTIVATIONS)
        for block in range(n_blocks):
            width = min(512, int(filters * growth**block))
            for _ in range(convs):
                x = layers.Conv2D(width, kernel, padding="same", use_bias=not batch_norm)(x)
                if batch_norm:
                    x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
                x = layers.Activation(activation)(x)
            x = (layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D)(2)(x)
            x = layers.Dropout(dropout)(x)
        global_pool = trial.suggest_categorical("head_pooling", ["gap", "flatten"])
        x = layers.GlobalAveragePooling2D()(x) if global_pool == "gap" else layers.Flatten()(x)
        outputs = dense_head(trial, x, num_classes, activation)
        model = keras.Model(inputs, outputs, name="cnn")
        return Candidate(model, compile_classifier(trial, model))
