"""The keras.applications zoo the fine-tuning space samples from, and where its weights come from.

Every backbone is built without its top and with a free input size (None, None, 3), so
one ImageNet weights file serves every input resolution: the file Keras itself loads by
default (the 224 px one for MobileNet v1 / v2).

Weights come from one of three places:

- ``weights="imagenet"``: Keras's normal download into its cache (``~/.keras/models``);
- ``weights="imagenet"`` with ``weights_dir``: the file of the same name in that folder,
  refused when its hash is not the one Keras expects (where Keras publishes one). Keras
  can only look in its own cache and, on a hash mismatch, downloads again, so this check
  is ours;
- ``weights="none"``: random initialisation.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from imgsearch.storage.errors import UserError


class WeightsUnavailable(UserError):
    """A backbone's pretrained weights cannot be had here (no file, or no download)."""


@dataclass(frozen=True)
class Backbone:
    """One keras.applications model: how to build it, preprocess for it, and cut it into blocks.

    ``weights_file`` and ``weights_hash`` are the no-top file name and hash Keras uses
    (``tests/test_finetune.py`` builds each one from its file). Group 1 of
    ``block_pattern`` is the block a layer belongs to, read from the layer's name.
    """

    name: str
    family: str
    constructor: Callable[..., keras.Model]
    preprocess: Callable
    weights_file: str
    weights_hash: str | None
    block_pattern: str
    kwargs: dict = field(default_factory=dict)

    def build(self, weights: str | None) -> keras.Model:
        with warnings.catch_warnings():  # "weights for input shape (224, 224) will be loaded": wanted here
            warnings.simplefilter("ignore", UserWarning)
            return self.constructor(include_top=False, weights=weights, input_shape=(None, None, 3), **self.kwargs)


def _zoo() -> dict[str, Backbone]:
    apps = keras.applications
    mobilenets = [
        Backbone(f"mobilenet_{alpha}", "mobilenet", apps.MobileNet, apps.mobilenet.preprocess_input,
                 f"mobilenet_{text}_224_tf_no_top.h5", None, r"^conv_(?:dw|pw)_(\d+)(?:_|$)", {"alpha": alpha})
        for alpha, text in ((0.25, "2_5"), (0.5, "5_0"), (0.75, "7_5"), (1.0, "1_0"))
    ]
    others = [
        Backbone("mobilenet_v3_small", "mobilenet_v3_small", apps.MobileNetV3Small, apps.mobilenet_v3.preprocess_input,
                 "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5", "d3e8ec802a04aa4fc771ee12a9a9b836",
                 r"^expanded_conv_(\d+)_"),
        Backbone("mobilenet_v2", "mobilenet_v2", apps.MobileNetV2, apps.mobilenet_v2.preprocess_input,
                 "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5", None, r"^block_(\d+)_"),
        Backbone("efficientnet_b0", "efficientnet_b0", apps.EfficientNetB0, apps.efficientnet.preprocess_input,
                 "efficientnetb0_notop.h5", "50bc09e76180e00e4465e1a485ddc09d", r"^block(\d[a-z])_"),
        Backbone("densenet121", "densenet121", apps.DenseNet121, apps.densenet.preprocess_input,
                 "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5", "30ee3e1110167f948a6b9946edeeb738",
                 r"^(?:conv|pool)(\d)_"),
        Backbone("resnet50", "resnet50", apps.ResNet50, apps.resnet50.preprocess_input,
                 "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", "4d473c1dd8becc155b73f8504c6f6626",
                 r"^conv(\d_block\d+)_"),
        Backbone("vgg16", "vgg16", apps.VGG16, apps.vgg16.preprocess_input,
                 "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "6d6bbae143d832006294945121d1f1fc",
                 r"^block(\d)_"),
    ]
    return {b.name: b for b in mobilenets + others}


#: Every backbone, in the catalog's order (spaces/catalog.py: its names, without Keras).
ZOO: dict[str, Backbone] = _zoo()


def _file_hash(path: Path, length: int) -> str:
    """md5 for a 32-digit expected hash, sha256 for a 64-digit one (as Keras's get_file decides)."""
    digest = hashlib.md5() if length == 32 else hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=None)
def _verified(path: Path, size: int, mtime: float, expected: str) -> str:
    return _file_hash(path, len(expected))


@lru_cache(maxsize=None)
def _unreadable(path: Path, size: int, mtime: float) -> str | None:
    """Why the HDF5 file at ``path`` cannot be read whole (None when it can). For the weights
    Keras publishes no hash of (MobileNet v1 and v2), reading every array is the check that
    catches a truncated or damaged file before a trial does."""
    import h5py

    def read(name, node):
        if isinstance(node, h5py.Dataset):
            node[()]

    try:
        with h5py.File(path, "r") as weights:
            weights.visititems(read)
    except Exception as exc:  # h5py raises OSError, KeyError or RuntimeError for a damaged file
        return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return None


def weights_file(backbone: Backbone, weights_dir: str | Path) -> Path:
    """Where ``backbone``'s weights file is, or would be, in ``weights_dir``."""
    return Path(weights_dir).expanduser().resolve() / backbone.weights_file


def weights_path(backbone: Backbone, weights_dir: str | Path) -> Path:
    """The verified weights file for ``backbone`` in ``weights_dir``; WeightsUnavailable otherwise."""
    path = weights_file(backbone, weights_dir)
    if not path.is_file():
        raise WeightsUnavailable(f"no weights for {backbone.name} in WEIGHTS_DIR={path.parent}: "
                                 f"put Keras's {backbone.weights_file} there")
    stat = path.stat()
    # A file that is there but wrong is a mistake to fix, not a backbone to leave out: UserError.
    if backbone.weights_hash:
        actual = _verified(path, stat.st_size, stat.st_mtime, backbone.weights_hash)
        if actual != backbone.weights_hash:
            raise UserError(f"{path} has hash {actual}, not the {backbone.weights_hash} Keras expects "
                            f"for {backbone.name}: replace it with Keras's file")
    elif problem := _unreadable(path, stat.st_size, stat.st_mtime):
        raise UserError(f"{path} is not a whole weights file ({problem}): replace it with Keras's file")
    return path


def load_backbone(name: str, weights: str, weights_dir: str | Path | None = None) -> keras.Model:
    """The headless ``name`` backbone with ``weights`` ("imagenet" or "none"), from ``weights_dir`` when given."""
    backbone = ZOO[name]
    if weights == "none":
        return backbone.build(None)
    if weights_dir:
        return backbone.build(str(weights_path(backbone, weights_dir)))
    try:
        return backbone.build("imagenet")
    except Exception as exc:  # Keras's get_file raises a bare Exception when a download fails
        if "URL fetch failure" not in str(exc) and "corrupted" not in str(exc):
            raise
        reason = str(exc).split(" -- ")[-1].strip()
        raise WeightsUnavailable(f"cannot download {backbone.weights_file} for {name} ({reason}); "
                                 "put the file in WEIGHTS_DIR, or use WEIGHTS=none") from None


def blocks(model: keras.Model, name: str) -> list[str]:
    """The last layer of each of ``model``'s blocks, in order (blocks as the layer names tell them)."""
    pattern = re.compile(ZOO[name].block_pattern)
    last: dict[str, str] = {}
    for layer in model.layers:
        match = pattern.match(layer.name)
        if match:
            last.pop(match.group(1), None)  # re-inserted: the order is where blocks end
            last[match.group(1)] = layer.name
    return list(last.values())


def cut_blocks(model: keras.Model, name: str, count: int) -> keras.Model:
    """``model`` without its last ``count`` blocks (and whatever follows them); ``count`` 0 keeps it whole."""
    if count == 0:
        return model
    ends = blocks(model, name)
    if count >= len(ends):
        raise ValueError(f"{name} has {len(ends)} blocks; cannot cut {count}")
    return keras.Model(model.inputs, model.get_layer(ends[-1 - count]).output, name=f"{model.name}_cut{count}")


@keras.saving.register_keras_serializable(package="imgsearch")
class BackbonePreprocess(layers.Layer):
    """The backbone's own ``preprocess_input`` (keras.applications) as a saved, backend-agnostic layer."""

    def __init__(self, backbone: str, **kwargs):
        super().__init__(**kwargs)
        self.backbone = backbone

    def call(self, x):
        # preprocess_input divides in place; under PyTorch that would change the caller's tensor.
        return ZOO[self.backbone].preprocess(ops.copy(x))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "backbone": self.backbone}

    def standard_layer(self) -> layers.Layer:
        """A layer of Keras's own that computes the same (for an export that loads in plain Keras):
        keras.applications' three preprocessing modes, or the identity where the backbone
        preprocesses inside itself. ``tests/test_api.py`` compares each with ``preprocess``."""
        mode = PREPROCESS_MODE[ZOO[self.backbone].family]
        name = f"{self.name}_standard"
        if mode == "tf":  # x / 127.5 - 1
            return layers.Rescaling(1 / 127.5, offset=-1.0, name=name)
        if mode == "torch":  # (x / 255 - mean) / std, per channel
            mean, std = np.array([0.485, 0.456, 0.406]) * 255, np.array([0.229, 0.224, 0.225]) * 255
            return layers.Normalization(mean=mean, variance=std ** 2, name=name)
        if mode == "caffe":  # RGB to BGR, then minus the BGR mean: a fixed 1x1 convolution
            bgr_mean = np.array([103.939, 116.779, 123.68])
            swap = np.eye(3)[::-1].reshape(1, 1, 3, 3)  # output channel c reads input channel 2 - c
            conv = layers.Conv2D(3, 1, name=name, trainable=False)
            conv.build((None, None, None, 3))
            conv.set_weights([swap, -bgr_mean])
            return conv
        return layers.Identity(name=name)


#: keras.applications' preprocessing of each backbone family (what its preprocess_input does).
PREPROCESS_MODE = {"mobilenet": "tf", "mobilenet_v2": "tf", "mobilenet_v3_small": "none", "efficientnet_b0": "none",
                   "densenet121": "torch", "resnet50": "caffe", "vgg16": "caffe"}
