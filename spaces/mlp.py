"""Dense-only networks on flattened pixels (the MNIST report's model family)."""

from __future__ import annotations

from dataclasses import dataclass

import keras
from keras import layers

from imgsearch.spaces.base import Candidate, SearchSpace
from imgsearch.spaces.common import BN_MOMENTUM, TRAINING_START, compile_classifier, image_input

ACTIVATIONS = ("relu", "elu", "gelu", "swish")


@dataclass(kw_only=True)
class MLPSpace(SearchSpace):
    """Flatten -> 1..``max_layers`` dense layers (constant or pyramid) -> softmax."""

    max_layers: int

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """Two 256-unit relu layers with batch norm and light dropout."""
        return [{"layers": 2, "units": 256, "shape": "constant", "activation": "relu", "batch_norm": True,
                 "dropout": 0.2, **TRAINING_START}]

    def build(self, trial, image_shape, num_classes) -> Candidate:
        inputs, x = image_input(image_shape)
        x = layers.Flatten()(x)
        depth = trial.suggest_int("layers", 1, self.max_layers)
        units = trial.suggest_categorical("units", [64, 128, 256, 512, 1024])
        shape = trial.suggest_categorical("shape", ["constant", "pyramid"]) if depth > 1 else "constant"
        activation = trial.suggest_categorical("activation", ACTIVATIONS)
        batch_norm = trial.suggest_categorical("batch_norm", [False, True])
        dropout = trial.suggest_float("dropout", 0.0, 0.5)
        for i in range(depth):
            x = layers.Dense(max(16, units // 2**i) if shape == "pyramid" else units)(x)
            if batch_norm:
                x = layers.BatchNormalization(momentum=BN_MOMENTUM)(x)
            x = layers.Activation(activation)(x)
            x = layers.Dropout(dropout)(x)
        outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        model = keras.Model(inputs, outputs, name="mlp")
        return Candidate(model, compile_classifier(trial, model))
