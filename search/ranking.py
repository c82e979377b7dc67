"""Which trial is the best: the one rule the search, its checkpoints, the MLflow best tag, the
progress lines, the leaderboard, export and the report all follow."""

from __future__ import annotations

from datetime import datetime

import optuna


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best complete trial (highest value), None before any completes.

    Among equal values it is the one that completed first: that is the trial whose model
    ``BestCheckpoint`` keeps. Optuna's ``study.best_trial`` leaves ties to the database's
    row order, so a later trial with an equal value could name a trial with no model.
    """
    return best_of(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def best_of(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """``best_trial`` among ``trials`` (those not complete are left out)."""
    best = ranked(trials)[:1]
    return best[0] if best else None


def ranked(trials: list) -> list:
    """The complete ones of ``trials``, best first: highest value, then the first to complete."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    return sorted(complete, key=lambda t: (-t.value, t.datetime_complete or datetime.max, t.number))
