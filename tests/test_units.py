"""The pure rules, checked in milliseconds: epoch planning, the budget's rules, the best weights
across phases, the best trial, scores, how a trial is described and why trials stopped, grouped."""

from datetime import datetime, timedelta
from types import SimpleNamespace

import numpy as np
import optuna
import pytest

from imgsearch import figures, records
from imgsearch.ranking import best_of
from imgsearch.results.evaluate import score
from imgsearch.trials.describe import how_it_ended, key_params, plural, why
from imgsearch.results.report import grouped_reasons
from imgsearch.spaces.base import Phase
from imgsearch.trials.budget import Budget, EpochPlan, epoch_limit
from imgsearch.trials.callbacks import BestWeights
from imgsearch.trials.training import plan_epochs

START = datetime(2026, 1, 1)


def trial(number, state="COMPLETE", value=None, params=None, attrs=None, epochs=0, done_after=0):
    """A FrozenTrial as the study holds it (``epochs`` intermediate values)."""
    params = params or {}
    return optuna.trial.FrozenTrial(
        number=number, state=getattr(optuna.trial.TrialState, state), value=None,
        datetime_start=START, datetime_complete=START + timedelta(seconds=done_after),
        params=params, distributions={k: optuna.distributions.CategoricalDistribution([v]) for k, v in params.items()},
        user_attrs=attrs or {}, system_attrs={}, intermediate_values={i: 0.5 for i in range(epochs)},
        trial_id=number, values=None if value is None else [value])


@pytest.mark.parametrize("shares, epochs, plan", [
    ((1.0,), 15, [15]),
    ((0.5, 0.5), 15, [8, 7]),  # rounded on the running total
    ((0.9, 0.1), 3, [3, 0]),  # a later phase may get none
    ((0.1, 0.9), 2, [1, 1]),  # the first phase gets at least one
])
def test_plan_epochs_splits_the_epochs_by_share(shares, epochs, plan):
    assert plan_epochs(tuple(Phase(f"p{i}", s) for i, s in enumerate(shares)), epochs) == plan


def test_an_epoch_plan_is_cut_to_the_deadline_and_a_hopeless_first_epoch_is_refused():
    now = 100.0
    plan = EpochPlan(15, deadline=now + 60, clock=lambda: now)
    assert plan.fit_to(0, now, seconds_per_epoch=2) is None and plan.total == 15  # 15 x 2.2 s fit in 60 s
    assert plan.fit_to(0, now, seconds_per_epoch=6) is None and plan.total == 9  # 60 // 6.6
    assert "cannot finish: about 20 s per epoch, 60 s of the budget left for 9 epochs" == plan.fit_to(0, now, 20)
    assert plan.fit_to(5, now, 20) is None and plan.total == 7  # later, what was trained is kept
    assert plan.ends_late(now + 50, 10) and not plan.ends_late(now, 10)
    assert EpochPlan(15).fit_to(0, now, 1e9) is None  # no deadline, no cut


def test_the_budget_stops_the_search_and_says_why():
    now = [0.0]
    budget = Budget(100, epochs=15, clock=lambda: now[0])
    exploring = Budget(100, epochs=15, clock=lambda: now[0], exploring=0.2)  # sampled trials on a fifth
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={records.EPOCH_SECONDS_ATTR: 10.0}))
    now[0] = 60.0  # 40 s left; the fastest trial needs 10 x 1.1 x 5 = 55 s for a third of its epochs
    study.optimize(lambda t: 0.1, n_trials=1, callbacks=[budget])  # Study.stop works from a callback only
    assert budget.ended and budget.ended_because.startswith("no trial can finish in the 40 s left")
    study.optimize(lambda t: 0.1, n_trials=1, callbacks=[exploring])  # 11 s for a third, on a fifth of the images
    assert not exploring.ended
    spent = Budget(10, epochs=15, clock=lambda: now[0])
    now[0] += 11
    study.optimize(lambda t: 0.1, n_trials=1, callbacks=[spent])
    assert spent.ended and spent.ended_because == "the budget is spent"


def test_the_budget_says_whether_a_trial_may_start_and_the_epoch_cap_follows_the_median():
    now = [0.0]
    budget = Budget(100, epochs=15, clock=lambda: now[0])
    assert budget.time_left() and Budget(None, epochs=15).time_left() and budget.total == 100
    budget.keep_for_ending(10)
    now[0] = 91.0  # the deadline for trials is 90
    assert not budget.time_left() and budget.left() == 9.0
    study = optuna.create_study(direction="maximize")
    assert epoch_limit(study, None) == (None, "")  # no complete trial: no cap
    for seconds in (1.0, 4.0, 8.0):
        study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={records.EPOCH_SECONDS_ATTR: seconds}))
    assert epoch_limit(study, None)[0] == 80.0  # 20 x the median 4 s
    assert epoch_limit(study, 0) == (None, "") and epoch_limit(study, 2.5) == (2.5, "MAX_EPOCH_SECONDS=2.5")


def test_one_callback_keeps_the_best_epochs_weights_across_a_trials_fits():
    """Each fit (a phase) ends on the best weights so far: a worse later phase gives way to the one before."""
    held = {"weights": None}
    model = SimpleNamespace(get_weights=lambda: held["weights"], set_weights=lambda w: held.update(weights=w))
    best = BestWeights()
    best.set_model(model)

    def fit(epochs):  # (val_accuracy, the weights that epoch ends with)
        for value, weights in epochs:
            held["weights"] = weights
            best.on_epoch_end(0, {"val_accuracy": value})
        best.on_train_end()

    fit([(0.5, "a"), (0.7, "b"), (0.6, "c")])
    assert held["weights"] == "b" and best.best == 0.7
    fit([(0.65, "d"), (0.69, "e")])  # the next phase starts from "b" and does worse
    assert held["weights"] == "b" and best.best == 0.7
    fit([(0.6, "f"), (0.8, "g")])  # and one that does better ends on its own best epoch
    assert held["weights"] == "g" and best.best == 0.8
    fit([(float("nan"), "h")])  # a NaN epoch is never the best
    assert held["weights"] == "g"


def test_the_best_weights_are_the_whole_models_when_a_phase_fits_a_part_of_it():
    """The transfer space's head phase fits the head (2 weights); the finetune phase the whole
    model (5), which does worse: it ends on the whole model as the head phase left it."""
    whole = {"weights": [0, 0, 0, 0, 0]}
    model = SimpleNamespace(get_weights=lambda: list(whole["weights"]), set_weights=lambda w: whole.update(weights=w))
    head = SimpleNamespace(get_weights=lambda: whole["weights"][-2:], set_weights=None)
    best = BestWeights(lambda: model)
    best.set_model(head)
    whole["weights"] = [0, 0, 0, 1, 1]
    best.on_epoch_end(0, {"val_accuracy": 0.8})
    best.on_train_end()
    best.set_model(model)
    whole["weights"] = [2, 2, 2, 2, 2]
    best.on_epoch_end(1, {"val_accuracy": 0.6})
    best.on_train_end()
    assert whole["weights"] == [0, 0, 0, 1, 1] and best.best == 0.8


def test_the_best_trial_is_the_highest_then_the_first_to_complete():
    trials = [trial(0, value=0.8, done_after=5), trial(1, value=0.9, done_after=9), trial(2, value=0.9, done_after=7),
              trial(3, "PRUNED", value=0.95)]
    assert best_of(trials).number == 2
    assert best_of([trial(0, "PRUNED", value=0.9)]) is None


def test_scores_top1_top5_loss_and_the_confusion_matrix():
    probabilities = np.full((4, 6), 0.1)
    probabilities[np.arange(4), [0, 1, 2, 0]] = 0.5  # the last image's true class (3) is not first
    result = score(probabilities, np.array([0, 1, 2, 3]), list("abcdef"))
    assert result["top1"] == 0.75 and result["top5"] == 1.0 and result["n_test"] == 4
    assert result["loss"] == pytest.approx(-(3 * np.log(0.5) + np.log(0.1)) / 4)
    assert result["confusion_matrix"][3][0] == 1 and result["per_class_accuracy"]["d"] == 0.0


def test_a_trial_is_described_in_a_few_words_and_by_how_it_ended():
    params = {"family": "transfer", "transfer/aug_flip": True, "transfer/backbone": "mobilenet_0.25",
              "transfer/resolution": 160, "transfer/head_layers": 0, "transfer/head_dropout": 0.2512,
              "transfer/learning_rate": 0.001}
    assert key_params(trial(0, value=0.8, params=params)) == \
        "backbone=mobilenet_0.25, resolution=160, head_layers=0, head_dropout=0.251"
    ensemble = trial(5, value=0.9, attrs={records.ENSEMBLE_OF_ATTR: [1, 0], records.ENSEMBLE_WEIGHTS_ATTR: [0.6, 0.4]})
    assert key_params(ensemble) == "trials 1 (0.60), 0 (0.40)"
    assert how_it_ended(trial(0, value=0.81234, epochs=15)) == "complete: val_accuracy 0.8123 (15 epochs)"
    cut = trial(1, value=0.7, epochs=5, attrs={records.PLANNED_EPOCHS_ATTR: 5})
    assert how_it_ended(cut) == "complete: val_accuracy 0.7000 (cut to 5 epochs to fit the budget)"
    assert why(cut) == "cut to 5 epochs to fit the budget"
    late = trial(2, value=0.7, epochs=7, attrs={records.DEADLINE_ATTR: 7})
    assert how_it_ended(late) == "complete: val_accuracy 0.7000 (stopped at the deadline after epoch 7)"
    pruned = trial(3, "PRUNED", attrs={records.PRUNE_REASON_ATTR: "by hyperband after epoch 6 at 0.5000"})
    assert how_it_ended(pruned) == "pruned: by hyperband after epoch 6 at 0.5000"
    failed = trial(4, "FAIL", attrs={records.FAIL_REASON_ATTR: "WeightsUnavailable: no file"})
    assert how_it_ended(failed) == "failed: WeightsUnavailable: no file" and why(failed) == "WeightsUnavailable: no file"
    assert plural(1, "trial") == "1 trial" and plural(2, "trial") == "2 trials"
    assert why(trial(6, "PRUNED")) == "by the pruner" and why(trial(0, value=0.8, epochs=15)) == ""


def test_pruned_and_failed_trials_are_grouped_by_cause():
    reasons = ["cannot finish: about 6 s per epoch, 21 s left", "cannot finish: about 33 s per epoch, 4 s left",
               "by hyperband after epoch 6 at 0.72 (the best other trial had 0.80 there)"]
    trials = [trial(i, "PRUNED", attrs={records.PRUNE_REASON_ATTR: r}) for i, r in enumerate(reasons)]
    trials += [trial(3, "FAIL", attrs={records.FAIL_REASON_ATTR: "WeightsUnavailable: x"}), trial(4, value=0.5)]
    assert [(g["state"], g["reason"], g["count"]) for g in grouped_reasons(trials)] == [
        ("PRUNED", "cannot finish", 2), ("FAIL", "WeightsUnavailable", 1), ("PRUNED", "by hyperband", 1)]


def test_every_command_has_its_function():
    from imgsearch.command_line.main import command_function
    from imgsearch.settings import COMMAND_HELP, COMMANDS

    assert all(callable(command_function(name)) for name in COMMANDS) and set(COMMAND_HELP) == set(COMMANDS)


def test_every_figure_is_drawn_from_plain_values_as_a_png():
    curves = {"loss": [(0, 1.0), (1, 0.5), (2, 0.4)], "val_loss": [(0, 1.1), (1, 0.7), (2, 0.6)],
              "accuracy": [(0, 0.5), (1, 0.8), (2, 0.9)], "val_accuracy": [(0, 0.4), (1, 0.7), (2, 0.75)],
              "phase": [(0, 1.0), (1, 1.0), (2, 2.0)]}
    assert figures.phase_starts(curves["phase"]) == [2]
    drawn = [figures.learning_curves(curves), figures.confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"]),
             figures.top_trials_curves({"trial 0": curves, "trial 3": {"val_accuracy": [(0, 0.3)]}}),
             figures.best_so_far({"study": [(0.0, 0.5), (10.0, 0.7)], "empty": []}),
             figures.importances({"learning_rate": 0.7, "units": 0.3})]
    assert all(figures.png(fig).startswith(b"\x89PNG\r\n\x1a\n") for fig in drawn)


def test_the_best_weights_of_real_keras_models_sharing_a_head():
    """As the transfer space builds them: the head model and the whole model share the head's layer."""
    import keras

    features = keras.Input((4,))
    dense = keras.layers.Dense(2, activation="softmax")
    head = keras.Model(features, dense(features))
    images = keras.Input((4,))
    whole = keras.Model(images, dense(keras.layers.Dense(4)(images)))
    best = BestWeights(lambda: whole)
    best.set_model(head)
    best.on_epoch_end(0, {"val_accuracy": 0.9})  # the head phase's best epoch
    best.on_train_end()
    kept = [w.copy() for w in whole.get_weights()]
    best.set_model(whole)
    whole.set_weights([w + 1 for w in whole.get_weights()])  # the finetune phase moves every weight
    best.on_epoch_end(1, {"val_accuracy": 0.5})
    best.on_train_end()
    assert all(np.array_equal(now, then) for now, then in zip(whole.get_weights(), kept))
