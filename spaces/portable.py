"""A trained model as Keras's own layers only: the exported model loads with a bare
``keras.saving.load_model`` where only Keras and its backend are installed.

The spaces' models hold two things of ours, and an AutoKeras model one of AutoKeras's:
``BackbonePreprocess`` (each backbone's ``preprocess_input``), which becomes the Keras layer that
computes the same (``BackbonePreprocess.standard_layer``); ``CastToFloat32``, which becomes a
``Rescaling(1.0)`` (a cast to float32 as well); and the label-smoothing loss, which the export
replaces with Keras's ``sparse_categorical_crossentropy`` (label smoothing only matters while
the search trains). Every other layer is the trained one itself, weights included.
"""

from __future__ import annotations

import keras

from imgsearch.spaces.backbones import BackbonePreprocess


def _standard(layer: keras.layers.Layer) -> keras.layers.Layer:
    if isinstance(layer, BackbonePreprocess):
        return layer.standard_layer()
    if type(layer).__name__ == "CastToFloat32" and type(layer).__module__.startswith("autokeras"):
        return keras.layers.Rescaling(1.0, name=layer.name)
    return layer


def non_keras_classes(model: keras.Model) -> list[str]:
    """The classes in ``model`` (nested models included) that Keras alone cannot load."""
    found = set()
    for layer in _all_layers(model):
        module = type(layer).__module__
        if not module.startswith("keras"):
            found.add(f"{module}.{type(layer).__name__}")
    return sorted(found)


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def portable_model(model: keras.Model) -> keras.Model:
    """``model`` with our layers (and AutoKeras's cast) replaced by Keras's own, compiled with
    Keras's loss; it predicts what ``model`` predicts. Raises ValueError naming any class that
    remains of another library (none does for the spaces here)."""
    standard = model
    if non_keras_classes(model):
        standard = keras.models.clone_model(model, clone_function=_standard, recursive=True)
    remaining = non_keras_classes(standard)
    if remaining:
        raise ValueError(f"the model holds layers Keras alone cannot load: {', '.join(remaining)}")
    standard.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    standard.optimizer.build(standard.trainable_variables)  # saved built: loads without a mismatch warning
    return standard
