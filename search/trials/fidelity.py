"""Multi-fidelity on large data: a trial that explores trains on a fraction of the training images,
and the promising ones are queued again on all of them (successive halving over the data, as
ASHA does over epochs; Hyperband still prunes over the epochs within each trial).

A trial's fidelity is its ``data_fraction`` (records.FRACTION_ATTR): the share of the training
images it trained on, recorded on the trial (and logged to its MLflow run as a param), so a
trial is rebuilt and retrained from its params and that fraction. The fraction is fixed when
the trial is queued (the portfolio, a promotion, a retry) or, for a sampled trial, is the
search's exploring fraction (``exploring_fraction``: EXPLORE_IMAGES over the training images;
its default is spaces/scale.py's LARGE_IMAGES).
Validation is always on the whole validation split, so every fidelity is scored alike.

Why ours: Optuna's pruners stop a trial over its steps (epochs) but have no notion of training
on part of the data; a study callback that enqueues a trial with its params is how Optuna
lets a search decide what runs next (``enqueue_trial``).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import optuna

from imgsearch.datasets import Dataset
from imgsearch.records import FRACTION_ATTR, PROMOTED_FROM_ATTR
from imgsearch.spaces.scale import DataScale

# Successive halving's rate: the best third of the trials at a low fidelity are promoted.
PROMOTE_RATE = 3


def exploring_fraction(train_images: int, image_shape: tuple[int, ...], explore_images: int) -> float:
    """The share of the training images a sampled trial trains on: ``explore_images`` (EXPLORE_IMAGES;
    0: all) 32x32 images' worth of them, rounded down to a hundredth; 1.0 when the data is no larger."""
    pixels = DataScale(train_images, 0, tuple(image_shape)).pixels
    if explore_images == 0 or pixels <= explore_images:
        return 1.0
    return max(0.01, math.floor(100 * explore_images / pixels) / 100)


def trial_fraction(trial: optuna.Trial, exploring: float) -> float:
    """The fraction ``trial`` trains on (the one it was queued with, else ``exploring``), recorded on it."""
    fraction = float(trial.user_attrs.get(FRACTION_ATTR, exploring))
    if FRACTION_ATTR not in trial.user_attrs:
        trial.set_user_attr(FRACTION_ATTR, fraction)
    return fraction


def fraction_of(trial: optuna.trial.FrozenTrial) -> float:
    """The share of the training images a finished trial trained on (1.0 when it did not say)."""
    return float(trial.user_attrs.get(FRACTION_ATTR, 1.0))


def subset(data: Dataset, fraction: float) -> Dataset:
    """``data`` with ``fraction`` of each class's training images (the same ones every time: a
    fixed permutation's first), validation and test unchanged; ``data`` itself at 1.0."""
    if fraction >= 1.0:
        return data
    order = np.random.default_rng(0).permutation(len(data.y_train))
    labels = np.asarray(data.y_train)[order]
    rows = [order[labels == c][:max(1, math.ceil(fraction * np.sum(labels == c)))]
            for c in range(data.num_classes)]
    rows = np.sort(np.concatenate(rows))
    return dataclasses.replace(data, x_train=np.asarray(data.x_train[rows]), y_train=np.asarray(data.y_train[rows]))


class Promote:
    """Study callback: once a trial on a fraction of the data completes, the best 1/PROMOTE_RATE
    of the complete trials at that fraction are each queued again, once, on all the data."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        fraction = fraction_of(trial)
        if trial.state != optuna.trial.TrialState.COMPLETE or fraction >= 1.0:
            return
        trials = study.get_trials(deepcopy=False)
        peers = sorted((t for t in trials if t.state == optuna.trial.TrialState.COMPLETE
                        and fraction_of(t) == fraction and t.value is not None), key=lambda t: -t.value)
        promoted = {t.user_attrs.get(PROMOTED_FROM_ATTR) for t in trials}
        for best in peers[:len(peers) // PROMOTE_RATE]:
            if best.number not in promoted:
                study.enqueue_trial(best.params, user_attrs={FRACTION_ATTR: 1.0, PROMOTED_FROM_ATTR: best.number},
                                    skip_if_exists=False)
