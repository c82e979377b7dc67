"""Fit one candidate, reporting every epoch to Optuna (pruning) and MLflow: the phases, their
epochs and the best weights (the callbacks are in ``callbacks.py``)."""

from __future__ import annotations

import math
import time

import keras
import optuna

from imgsearch.datasets import Dataset
from imgsearch.records import OBJECTIVE
from imgsearch.trials.tracking import TrialRun
from imgsearch.spaces import Candidate, Phase, SearchSpace
from imgsearch.trials.budget import EpochPlan
from imgsearch.trials.callbacks import (BestWeights, EpochLine, EpochLogger, EpochTimer, FollowPlan, History,
                                        ModelLogger, PruningCallback, StopAtChance, StopOnSignal, WarmupCosine,
                                        chance_level, first_check)


class TrialFailed(Exception):
    """A trial that cannot produce a value (NaN loss): it fails, the study goes on."""


def plan_epochs(phases: tuple[Phase, ...], epochs: int) -> list[int]:
    """Each phase's number of epochs: its share of ``epochs``, rounded on the running total.

    The first phase gets at least one epoch; a later one may get none (and is skipped).
    """
    plan, done, share = [], 0, 0.0
    for phase in phases:
        share += phase.share
        end = min(epochs, max(1, int(epochs * share + 0.5)))
        plan.append(end - done)
        done = end
    plan[-1] += epochs - done
    return plan


def phase_end(phases: tuple[Phase, ...], plan: EpochPlan, index: int) -> int:
    """The epoch count at which phase ``index`` ends under the plan as it is now."""
    return sum(plan_epochs(phases, plan.total)[:index + 1])


def train(space: SearchSpace, candidate: Candidate, plan: EpochPlan, data: Dataset, trial: optuna.Trial,
          run: TrialRun, timer: EpochTimer | None = None) -> tuple[float, keras.Model]:
    """Fit the candidate's phases over ``plan.total`` epochs with ``space.fit``; return the best
    epoch's val_accuracy and the trained model.

    The run gets the model's parameter count and summary when its first fit begins (a
    space's library may build the model only then).

    Epochs are counted across phases, so Optuna's pruner sees one curve, and each phase's
    learning rate follows a warmup + cosine schedule over its planned epochs. No early
    stopping: it would cut off a trial still improving under its schedule (the pruner
    stops the hopeless ones). The model ends with the weights of the best epoch of all
    phases (``BestWeights``). The plan may be cut while training (``timer``, to fit the
    deadline), and a trial still running at the deadline stops at the end of that epoch,
    keeping what it reached.
    Raises optuna.TrialPruned when the pruner or ``timer`` says so, and TrialFailed when
    the loss stops being finite.
    """
    started = time.perf_counter()
    losses, done, model, best = [], 0, candidate.model, BestWeights(lambda: candidate.model)
    check, chance = first_check(plan.total), chance_level(data.y_val)
    describe = ModelLogger(run, candidate)
    for index, phase in enumerate(candidate.phases):
        begin = done
        end = phase_end(candidate.phases, plan, index)
        if end <= begin:
            continue
        if phase.start is not None:
            phase.start()
        history = History()
        callbacks = [
            StopOnSignal(),
            describe,
            keras.callbacks.TerminateOnNaN(),
            *([timer] if timer is not None else []),
            WarmupCosine(lambda: phase_end(candidate.phases, plan, index) - begin, first_epoch=begin),
            EpochLogger(run, index + 1),  # before pruning, so a pruned trial's last epoch is logged
            EpochLine(plan, phase.name if len(candidate.phases) > 1 else None),
            PruningCallback(trial, OBJECTIVE, plan),
            StopAtChance(check, chance, plan),  # after the pruner's report, so the study has the epoch's value
            FollowPlan(plan, lambda: phase_end(candidate.phases, plan, index)),
            best,  # ends the fit on the best epoch's weights so far
            history,
        ]
        model = space.fit(
            trial, candidate,
            x=data.x_train, y=data.y_train,
            batch_size=candidate.batch_size,
            initial_epoch=begin,
            epochs=end,
            validation_data=(data.x_val, data.y_val),
            callbacks=callbacks,
            verbose=0,  # EpochLine says each epoch
        )
        done += len(history.epoch)
        losses += history.history.get("loss", [])
        if not history.epoch or not all(math.isfinite(v) for v in losses) or plan.stopped_at_deadline is not None:
            break
    run.log_metrics({"training_seconds": time.perf_counter() - started, "epochs_trained": done})
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(losses)}")
    return best.best, model
