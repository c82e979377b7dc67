"""TRIALS: how many trials count towards the study's target, and which ones are not needed.

Optuna's MaxTrialsCallback counts trials, then the next ask creates one, in separate
transactions: N workers checking at once overshoot by up to N - 1. Here a trial checks
again once it exists. Trial numbers follow creation order, so when the trials before it
already reach the target (finished, or running on a live worker), it is "surplus": pruned
at once, before any training, and not counted. Several workers thus never finish more
than TRIALS counted trials; if a running trial fails afterwards, a worker adds another.
"""

from __future__ import annotations

import datetime

import optuna

from imgsearch.records import PRUNE_REASON_ATTR, SURPLUS_ATTR, WORKER, WORKER_ATTR

FINISHED_STATES = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
# A live worker marks its trial with WORKER_ATTR first thing after asking for it; a RUNNING
# trial older than this without the mark was left by a process from before heartbeats (it
# never goes stale) and counts for nothing.
UNMARKED_GRACE = datetime.timedelta(seconds=10)


def counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial counts towards TRIALS (complete or pruned, not surplus)."""
    return trial.state in FINISHED_STATES and SURPLUS_ATTR not in trial.user_attrs


def finished_count(study: optuna.Study) -> int:
    """Trials that count towards TRIALS."""
    return sum(counts(t) for t in study.get_trials(deepcopy=False, states=FINISHED_STATES))


def reached(study: optuna.Study, target: int | None) -> bool:
    """Whether the study has its ``target`` (never, without one: then the budget ends the search)."""
    return target is not None and finished_count(study) >= target


def is_live(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a RUNNING trial is being run by a worker (marked, or asked just now)."""
    if WORKER_ATTR in trial.user_attrs:
        return True
    started = trial.datetime_start
    return started is not None and datetime.datetime.now() - started < UNMARKED_GRACE


def live_running(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return [t for t in running if is_live(t)]


def surplus_reason(study: optuna.Study, number: int, target: int) -> str | None:
    """Why trial ``number`` is not needed, or None when it is."""
    before = [t for t in study.get_trials(deepcopy=False) if t.number < number]
    taken = sum(counts(t) or (t.state == optuna.trial.TrialState.RUNNING and is_live(t)) for t in before)
    if taken < target:
        return None
    return f"not needed: {taken} trials before it were finished or running (TRIALS={target})"


def claim(trial: optuna.Trial, target: int | None) -> None:
    """Mark ``trial`` as this worker's (first, so other workers see it is live), then, with a
    ``target``, prune it at once as surplus when the trials before it already take it."""
    trial.set_user_attr(WORKER_ATTR, WORKER)
    reason = surplus_reason(trial.study, trial.number, target) if target else None
    if reason:
        trial.set_user_attr(SURPLUS_ATTR, True)
        trial.set_user_attr(PRUNE_REASON_ATTR, reason)
        raise optuna.TrialPruned(reason)


class StopAtTarget:
    """Study callback: stop this process once counted and live running trials reach ``target``."""

    def __init__(self, target: int):
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if finished_count(study) + len(live_running(study)) >= self.target:
            study.stop()
