"""Datasets that ship with Keras (downloaded once into ~/.keras/datasets) or scikit-learn."""

from __future__ import annotations

import numpy as np

from imgsearch.datasets.base import Labeled
from imgsearch.storage.errors import UserError

CIFAR10 = "airplane automobile bird cat deer dog frog horse ship truck".split()
FASHION = "t-shirt trouser pullover dress coat sandal shirt sneaker bag ankle-boot".split()
CIFAR100_COARSE = (
    "aquatic_mammals fish flowers food_containers fruit_and_vegetables household_electrical_devices "
    "household_furniture insects large_carnivores large_man-made_outdoor_things "
    "large_natural_outdoor_scenes large_omnivores_and_herbivores medium_mammals "
    "non-insect_invertebrates people reptiles small_mammals trees vehicles_1 vehicles_2"
).split()
CIFAR100_FINE = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly "
    "camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup "
    "dinosaur dolphin elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower "
    "leopard lion lizard lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid "
    "otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road "
    "rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower "
    "sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale "
    "willow_tree wolf woman worm"
).split()

# Test share carved from scikit-learn's digits, which has no test split of its own.
DIGITS_TEST_FRACTION = 0.2


def _keras_dataset(name: str, **kwargs):
    import keras

    try:
        return getattr(keras.datasets, name).load_data(**kwargs)
    except Exception as exc:  # urllib / http errors differ by Python and Keras version
        raise UserError(
            f"cannot download {name} through keras.datasets ({type(exc).__name__}); offline? "
            "Keras keeps it in ~/.keras/datasets once downloaded"
        ) from None


def _as_images(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.uint8)
    return x[..., None] if x.ndim == 3 else x


def load_keras(name: str, labels: str = "fine") -> Labeled:
    """cifar10, cifar100 (``labels`` fine or coarse), mnist or fashion_mnist at native size."""
    kwargs, classes = {}, {"cifar10": CIFAR10, "mnist": [str(i) for i in range(10)], "fashion_mnist": FASHION}.get(name)
    if name == "cifar100":
        if labels not in ("fine", "coarse"):
            raise UserError(f"LABELS={labels!r}: cifar100 labels are 'fine' or 'coarse'")
        kwargs, classes = {"label_mode": labels}, CIFAR100_FINE if labels == "fine" else CIFAR100_COARSE
    (x_train, y_train), (x_test, y_test) = _keras_dataset(name, **kwargs)
    return Labeled(
        _as_images(x_train), np.ravel(y_train).astype(np.int64),
        _as_images(x_test), np.ravel(y_test).astype(np.int64), list(classes),
    )


def load_digits() -> Labeled:
    """scikit-learn's bundled 8x8 digits (0-16 scaled to 0-255), with a stratified test share."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = np.round(bunch.images * (255 / 16)).astype(np.uint8)[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_FRACTION, stratify=bunch.target, random_state=0
    )
    return Labeled(x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64), [str(i) for i in range(10)])
