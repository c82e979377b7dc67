"""A trial whose training would not fit in this machine's memory is pruned before it starts.

Without this, a model too large for the images (IMAGE_SIZE=512 on a CPU, say) takes every
gigabyte the machine has, then its swap, before anything says why.
"""

from __future__ import annotations

import math

import keras
import optuna

from imgsearch.storage.machine import GIB, available_memory

# The share of the available memory one trial may plan to use.
MEMORY_SHARE = 0.9
# Bytes a value of an activation costs in training: float32, kept for the backward pass,
# and its gradient.
ACTIVATION_BYTES = 4 * 2
# Bytes a weight costs: float32 weight, gradient and two optimizer slots.
WEIGHT_BYTES = 4 * 4


def _activation_values(model: keras.Model) -> int:
    """Values per example in the outputs of every layer of ``model``, nested models' layers included."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            total += _activation_values(layer)
            continue
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError):  # a layer used more than once has no single output
            continue
        total += sum(math.prod(d or 1 for d in tensor.shape[1:]) for tensor in outputs)
    return total


def training_bytes(model: keras.Model, batch_size: int) -> int:
    """About how many bytes training ``model`` at ``batch_size`` holds at once."""
    return batch_size * _activation_values(model) * ACTIVATION_BYTES + model.count_params() * WEIGHT_BYTES


def check_memory(candidate) -> None:
    """Prune the trial when its candidate's training on images would take more than MEMORY_SHARE
    of the memory available now; a space whose library builds the model later (no model yet), or
    a model that never trains on images, is not checked."""
    batch = candidate.image_batch_size
    if candidate.model is None or not batch:
        return
    need, available = training_bytes(candidate.model, batch), available_memory()
    if need > MEMORY_SHARE * available:
        raise optuna.TrialPruned(f"too large for memory: training would take about {need / GIB:.1f} GiB at batch "
                                 f"{batch}, {available / GIB:.1f} GiB available; a smaller IMAGE_SIZE "
                                 "makes every model smaller")
