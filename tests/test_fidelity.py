"""Real-size data: the starting points scale with the data by the rule (spaces/scale.py), and trials
on a fraction of it are recorded, promoted to all of it, and shown (search/trials/fidelity.py)."""

from __future__ import annotations

import time

import numpy as np
import optuna
import pytest

from imgsearch import records
from imgsearch.datasets import Dataset
from imgsearch.results.leaderboard import leaderboard
from imgsearch.results.report import collect, render
from imgsearch.spaces.scale import DataScale
from imgsearch.spaces.transfer import RESOLUTIONS
from imgsearch.trials.budget import EpochPlan
from imgsearch.trials.callbacks import check_preparation
from imgsearch.trials.fidelity import Promote, exploring_fraction, subset
from imgsearch.trials.study import get_space
from conftest import new_search, trial_runs


def fractions(space_name: str, scale: DataScale, **options) -> list:
    return [p.get(records.FRACTION_ATTR) for p in get_space(space_name, **options).initial_params(scale.image_shape,
                                                                                                  scale)]


def test_the_starting_points_scale_with_the_images_and_their_pixels_not_the_dataset(tmp_path):
    small = DataScale(4_500, 10, (32, 32, 3), 600, exploring=1.0)  # the 10-class sample
    assert not small.large and fractions("cnn", small) == [None, None, None]  # all three on all the data
    for large in (DataScale(45_000, 100, (32, 32, 3), 1200, exploring=0.2),  # the 100-class set
                  DataScale(4_500, 10, (64, 64, 3), 1200, exploring=0.5)):  # the sample's images at 64 px
        assert large.large
        assert fractions("cnn", large) == [None, large.exploring, large.exploring]  # the first on all
        # SPACE=auto without the transfer family: the cnn space's starts, each share under its own name
        assert fractions("auto", large, weights_dir=str(tmp_path)) == [None, large.exploring, large.exploring]
    assert exploring_fraction(45_000, (32, 32, 3), 9_000) == 0.2
    assert exploring_fraction(4_500, (64, 64, 3), 9_000) == 0.5
    assert exploring_fraction(4_500, (32, 32, 3), 9_000) == 1.0 and exploring_fraction(45_000, (32, 32, 3), 0) == 1.0


def test_a_backbones_first_trial_keeps_its_features_within_a_share_of_the_budget(shared_weights):
    space = get_space("transfer", weights_dir=str(shared_weights))

    def start(scale):
        first = space.initial_params(scale.image_shape, scale)[0]
        return first["resolution"], first["aug_flip"]

    assert start(DataScale(4_500, 10, (32, 32, 3), 600)) == (160, True)  # seconds of features: as before
    assert start(DataScale(45_000, 100, (32, 32, 3), 1200)) == (160, False)  # no flipped copies on large data
    assert start(DataScale(45_000, 100, (32, 32, 3), 600)) == (128, False)  # 160 px would take over a quarter
    assert start(DataScale(90_000, 200, (32, 32, 3), 300)) == (min(RESOLUTIONS), False)  # none fits: the smallest
    assert start(DataScale(90_000, 200, (32, 32, 3), None)) == (160, False)  # no budget to fit


def test_the_rule_reads_the_data_a_search_is_given(tmp_path):
    """Through ``prepare``, as a search starts: 9,000 images of 32x32 are not large data, 9,100 are."""
    rng = np.random.default_rng(0)

    def queued(count: int) -> list:
        x = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        y = np.arange(count) % 10
        data = Dataset("arrays", [str(c) for c in range(10)], x, y, x[:50], y[:50], x[:50], y[:50],
                       fingerprint=f"scale-{count}")
        search = new_search(tmp_path / str(count), data, "cnn", first_trials=None, trials=3)
        return [t.user_attrs.get(records.FRACTION_ATTR) for t in search.study.get_trials()]

    assert queued(9_000) == [1.0, 1.0, 1.0]
    assert queued(9_100) == [1.0, 0.98, 0.98]  # EXPLORE_IMAGES (9,000) of 9,100


def test_a_subset_keeps_each_class_and_the_same_images_every_time(digits):
    part = subset(digits, 0.25)
    assert len(part.y_train) < 0.3 * len(digits.y_train) and set(part.y_train) == set(digits.y_train)
    assert np.array_equal(part.x_train, subset(digits, 0.25).x_train) and part.x_val is digits.x_val
    assert subset(digits, 1.0) is digits


def test_trials_explore_on_a_fraction_and_the_best_third_are_trained_on_all(tmp_path, digits):
    """Sampled trials on a third of digits (EXPLORE_IMAGES=30 of its ~90 32x32-images' worth); once
    three completed, the best is queued again on all the images and runs next; each trial's
    share is recorded, logged and shown."""
    search = new_search(tmp_path, digits, "mlp", epochs=2, first_trials=None, trials=5, explore_images=30)
    search.run()
    trials = search.study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE"] * 5
    shares = [t.user_attrs[records.FRACTION_ATTR] for t in trials]
    explored = exploring_fraction(len(digits.y_train), digits.image_shape, 30)
    assert 0 < explored < 1 and shares == [1.0, explored, explored, explored, 1.0]  # the portfolio's, then sampled
    best = max(trials[1:4], key=lambda t: t.value)
    assert trials[4].user_attrs[records.PROMOTED_FROM_ATTR] == best.number and trials[4].params == best.params
    runs = trial_runs(search.tracker)
    assert [float(runs[n].data.params["data_fraction"]) for n in range(5)] == shares  # rebuilt and retrained from these
    board = leaderboard(search.study).set_index("trial")
    assert board.loc[1, "data"] == f"{100 * explored:.0f}%" and board.loc[4, "data"] == f"100% (from {best.number})"
    page = render([collect(search.study, None)], "test")  # the report's table of the best trials
    assert "<th>training data</th>" in page and f"<td>100% (from {best.number})</td>" in page

    promote = Promote()  # once only: seeing the same trials again queues nothing
    promote(search.study, trials[3])
    assert len(search.study.get_trials(states=(optuna.trial.TrialState.WAITING,))) == 0


def test_a_trial_on_a_fraction_is_never_pruned_against_trials_on_all_the_data(tmp_path, digits):
    """A pruner that prunes everything it judges: the trials on all the images are pruned after
    their first epoch, the one on a fraction trains its epochs."""
    search = new_search(tmp_path, digits, "mlp", epochs=3, pruner=optuna.pruners.ThresholdPruner(lower=1.01),
                        first_trials=None, trials=2, explore_images=30)
    search.run()
    first, sampled = search.study.get_trials()
    assert first.state.name == "PRUNED" and len(first.intermediate_values) == 1
    assert sampled.state.name == "COMPLETE" and len(sampled.intermediate_values) == 3
    assert sampled.user_attrs[records.FRACTION_ATTR] < 1


def test_a_trial_whose_features_would_take_over_half_its_time_is_skipped_before_it_computes_them():
    plan = EpochPlan(15, deadline=time.monotonic() + 300)
    check_preparation(0.0, plan)  # nothing to compute
    check_preparation(140.0, plan)  # under half of the 300 s left
    with pytest.raises(optuna.TrialPruned, match=r"cannot finish: about 160 s to compute its backbone's features"):
        check_preparation(160.0, plan)
    check_preparation(10_000.0, EpochPlan(15))  # no deadline
