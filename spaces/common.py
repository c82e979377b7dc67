"""Pieces the spaces share: the uint8 input, augmentation, the dense head, the label-smoothing
loss, and the optimizer choice (``compile_classifier``) that the mlp and finetune spaces take
(finetune with batch sizes of its own). The cnn space samples its own optimizer (SGD or AdamW,
over ranges measured for small CNNs), and so does the transfer space (Adam or AdamW, for a head
and its fine-tuned backbone)."""

from __future__ import annotations

import keras
import optuna
from keras import layers, ops

OPTIMIZERS = ("adam", "sgd", "rmsprop", "adamw")
BATCH_SIZES = (32, 64, 128, 256)
# Keras's default 0.99 leaves the moving statistics far from the batch statistics after the
# few hundred steps of a short trial, and validation accuracy then sits at chance.
BN_MOMENTUM = 0.9


def image_input(image_shape: tuple[int, int, int], scale: float = 1.0 / 255) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """A uint8 input and the same images as floats times ``scale`` ([0, 1] by default)."""
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    return inputs, layers.Rescaling(scale, name="rescale")(inputs)


def augment(trial: optuna.Trial, x: keras.KerasTensor) -> keras.KerasTensor:
    """Sampled random flip / rotation / zoom / translation; active in training only."""
    if trial.suggest_categorical("aug_flip", [False, True]):
        x = layers.RandomFlip("horizontal")(x)
    rotation = trial.suggest_categorical("aug_rotation", [0.0, 0.05, 0.1, 0.2])
    if rotation:
        x = layers.RandomRotation(rotation)(x)
    zoom = trial.suggest_categorical("aug_zoom", [0.0, 0.1, 0.2])
    if zoom:
        x = layers.RandomZoom(zoom)(x)
    translation = trial.suggest_categorical("aug_translation", [0.0, 0.05, 0.1])
    if translation:
        x = layers.RandomTranslation(translation, translation)(x)
    return x


def dense_head(trial: optuna.Trial, x, num_classes: int, activation: str, max_layers: int = 3):
    """0 to ``max_layers`` dense layers, constant width or a halving pyramid, with dropout; softmax output."""
    depth = trial.suggest_int("head_layers", 0, max_layers)
    if depth:
        units = trial.suggest_categorical("head_units", [64, 128, 256, 512])
        shape = trial.suggest_categorical("head_shape", ["constant", "pyramid"]) if depth > 1 else "constant"
        dropout = trial.suggest_float("head_dropout", 0.0, 0.5)
        for i in range(depth):
            x = layers.Dense(units // 2**i if shape == "pyramid" else units, activation=activation)(x)
            x = layers.Dropout(dropout)(x)
    return layers.Dense(num_classes, activation="softmax", name="probabilities")(x)


def make_optimizer(trial: optuna.Trial) -> keras.optimizers.Optimizer:
    """Sampled optimizer, log-uniform learning rate and weight decay; momentum for SGD only."""
    name = trial.suggest_categorical("optimizer", OPTIMIZERS)
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)
    weight_decay = trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
    if name == "sgd":
        momentum = trial.suggest_float("momentum", 0.8, 0.99)
        return keras.optimizers.SGD(lr, momentum=momentum, weight_decay=weight_decay)
    cls = {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop, "adamw": keras.optimizers.AdamW}[name]
    return cls(lr, weight_decay=weight_decay)


@keras.saving.register_keras_serializable(package="imgsearch")
class SparseCrossentropyWithSmoothing(keras.losses.Loss):
    """Sparse categorical cross-entropy with label smoothing.

    Written here because Keras 3's SparseCategoricalCrossentropy has no
    ``label_smoothing`` and the datasets keep integer labels.
    """

    def __init__(self, label_smoothing: float = 0.0, name: str = "sparse_crossentropy_smoothed", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        one_hot = ops.one_hot(labels, ops.shape(y_pred)[-1], dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


# A plain, well-behaved recipe that every space starts its initial configuration from.
TRAINING_START = {"optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 1e-5, "label_smoothing": 0.0,
                  "batch_size": 64}


def compile_classifier(trial: optuna.Trial, model: keras.Model, batch_sizes: tuple[int, ...] = BATCH_SIZES) -> int:
    """Compile ``model`` with the sampled optimizer and label smoothing; return the sampled batch size."""
    optimizer = make_optimizer(trial)
    smoothing = trial.suggest_float("label_smoothing", 0.0, 0.1)
    model.compile(optimizer=optimizer, loss=SparseCrossentropyWithSmoothing(smoothing), metrics=["accuracy"])
    return trial.suggest_categorical("batch_size", batch_sizes)


def recompile(model: keras.Model, learning_rate: float) -> None:
    """Compile ``model`` again (after its trainable layers changed) with a fresh optimizer
    of the same kind and settings at ``learning_rate``; same loss and metrics."""
    config = {**model.optimizer.get_config(), "learning_rate": learning_rate}
    model.compile(optimizer=type(model.optimizer).from_config(config), loss=model.loss, metrics=["accuracy"])
