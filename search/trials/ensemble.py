"""The end-of-budget step of a SPACE=auto search: when no new trial can finish in the time left,
an ensemble of the kept models, measured on the validation split, becomes the study's best if
it beats every single model.

Why an ensemble and not "continue the best trial": a trial already ends on its best epoch's
weights at the end of its planned schedule, so more epochs of it at its last learning rate
seldom move it, while models of different families (a head on a backbone's features, a net
from scratch) err on different images: averaging their probabilities is the one step that
pays in seconds (docs/race.md).

The step is a trial of the study (``ENSEMBLE_STEP_ATTR``), so it has an MLflow run, a trial
line, a place in the report, and, when it wins, it is what ``make export`` exports: one Keras
model on raw uint8 images whose ``model.json`` names its members.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import optuna

from imgsearch.datasets import Dataset
from imgsearch.records import ENSEMBLE_OF_ATTR, ENSEMBLE_STEP_ATTR, ENSEMBLE_WEIGHTS_ATTR, OBJECTIVE, family_of
from imgsearch.trials.checkpoints import BestCheckpoint
from imgsearch.trials.tracking import TrialRun
from imgsearch.spaces import load_model

MEMBERS = 4  # the best this many complete trials (and each family's best) may be members
RESERVE_SHARE = 0.03  # of the budget, kept for the step: 18 s of 600
RESERVE_LIMITS = (10.0, 60.0)  # seconds, the least and the most kept
PREDICT_BATCH = 256
MARGIN = 3.0  # seconds: the step ends this long before the budget's deadline
ROUNDS = 20  # of greedy selection: a member's weight is a multiple of 1/21 at the finest


def reserve_seconds(budget_seconds: float) -> float:
    """The seconds kept at the end of a budget for the ensemble step (measured: README)."""
    low, high = RESERVE_LIMITS
    return min(high, max(low, RESERVE_SHARE * budget_seconds))


def queue_ensemble_step(study: optuna.Study) -> bool:
    """Queue the step's trial, unless other trials wait (they would run first) or fewer than
    two complete models could be members. Returns whether it was queued."""
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    complete = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
                if family_of(t) != "ensemble"]
    if waiting or len(complete) < 2:
        return False
    study.enqueue_trial({}, user_attrs={ENSEMBLE_STEP_ATTR: True}, skip_if_exists=False)
    return True


def build_ensemble(trial: optuna.Trial, checkpoint: BestCheckpoint, data: Dataset, run: TrialRun,
                   deadline: float | None) -> tuple[float, keras.Model]:
    """The best weighted mean of kept models' probabilities on the validation split
    (``select_members``), as (its accuracy, one Keras model). Members are predicted best first
    until ``deadline`` (``time.monotonic()``). Pruned, with the reason, when it does not beat
    the best single model."""
    study = trial.study
    candidates = [t for t in checkpoint.kept(study)
                  if family_of(t) != "ensemble" and checkpoint.path(t.number).is_file()]
    models, probabilities, costs = {}, {}, []
    y_val = np.asarray(data.y_val)
    began = time.monotonic()
    for member in candidates:
        # Another member costs about what the slowest so far did (loading, predicting), and saving
        # the ensemble about as much again: stop while that still ends MARGIN before the deadline.
        if deadline is not None and time.monotonic() + 2 * max(costs, default=0.0) > deadline - MARGIN:
            break
        started = time.monotonic()
        model = load_model(checkpoint.path(member.number), compile=False)
        probabilities[member.number] = model.predict(np.asarray(data.x_val), batch_size=PREDICT_BATCH, verbose=0)
        models[member.number] = model
        costs.append(time.monotonic() - started)
    if len(models) < 2:
        raise optuna.TrialPruned(f"ensemble: fewer than two of the {len(candidates)} kept models could be "
                                 f"combined in the time left ({time.monotonic() - began:.0f} s)")
    best_single = max(candidates[:len(models)], key=lambda t: t.value)
    counts = select_members(probabilities, y_val, best_single.number)
    chosen = [n for n in models if counts.get(n)]
    weights = [counts[n] / sum(counts.values()) for n in chosen]
    value = float(np.mean(np.argmax(sum(w * probabilities[n] for n, w in zip(chosen, weights)), -1) == y_val))
    run.log_params({}, derived={ENSEMBLE_OF_ATTR: ",".join(map(str, chosen)),
                                ENSEMBLE_WEIGHTS_ATTR: ",".join(f"{w:.3f}" for w in weights),
                                "members_tried": len(models)})
    run.log_epoch(0, {OBJECTIVE: value})
    trial.set_user_attr(ENSEMBLE_OF_ATTR, chosen)
    trial.set_user_attr(ENSEMBLE_WEIGHTS_ATTR, weights)
    if len(chosen) < 2:
        raise optuna.TrialPruned(f"ensemble: no other kept model of {len(models) - 1} improves trial "
                                 f"{best_single.number}'s {best_single.value:.4f} on the validation split")
    if value <= best_single.value:
        raise optuna.TrialPruned(f"ensemble of trials {', '.join(map(str, chosen))}: {value:.4f}, "
                                 f"not above trial {best_single.number}'s {best_single.value:.4f}")
    return value, ensemble_model([models[n] for n in chosen], chosen, weights, data.image_shape)


def select_members(probabilities: dict[int, np.ndarray], labels: np.ndarray, first: int) -> dict[int, int]:
    """Greedy ensemble selection with replacement (Caruana et al., 2004, as auto-sklearn and AutoGluon
    do): from ``first``, ROUNDS times add the model whose addition scores best (accuracy, then
    log-loss), a model already in included (which is how a weaker one comes to weigh less);
    return how many times each model was picked in the best-scoring round (the earliest of equals)."""
    counts, total = {first: 1}, probabilities[first].copy()

    def score(mean: np.ndarray) -> tuple[float, float]:
        loss = -np.mean(np.log(np.clip(mean[np.arange(len(labels)), labels], 1e-7, 1.0)))
        return float(np.mean(np.argmax(mean, -1) == labels)), -float(loss)

    best, best_counts = score(total), dict(counts)
    for _ in range(ROUNDS):
        size = sum(counts.values()) + 1
        tried = {n: score((total + p) / size) for n, p in probabilities.items()}
        pick = max(tried, key=tried.get)
        counts[pick], total = counts.get(pick, 0) + 1, total + probabilities[pick]
        if tried[pick] > best:
            best, best_counts = tried[pick], dict(counts)
    return best_counts


def ensemble_model(members: list[keras.Model], numbers: list[int], weights: list[float],
                   image_shape: tuple) -> keras.Model:
    """One model on raw uint8 images: the ``weights``-weighted sum of ``members``' probabilities
    (Keras's own layers only; each member renamed after its trial)."""
    inputs = keras.Input(shape=image_shape, dtype="uint8", name="image")
    outputs = []
    for number, member, weight in zip(numbers, members, weights):
        member.name = f"trial_{number}"  # each nested model needs a name of its own
        outputs.append(keras.layers.Rescaling(weight, name=f"weight_{number}")(member(inputs)))
    return keras.Model(inputs, keras.layers.Add(name="mean_probabilities")(outputs), name="ensemble")
