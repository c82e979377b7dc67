"""The Optuna objective: a trial builds a model from its space, trains it, and is tracked."""

from __future__ import annotations

import contextlib
import gc
import time
import traceback

import keras
import optuna

from imgsearch.trials import signals
from imgsearch.trials.checkpoints import BestCheckpoint
from imgsearch.datasets import Dataset
from imgsearch.trials.trial_target import claim
from imgsearch.trials.tracking import Tracker, TrackingLost, TrialRun
from imgsearch.trials.budget import EpochPlan, epoch_limit
from imgsearch.records import (DEADLINE_ATTR, ENSEMBLE_STEP_ATTR, EPOCH_SECONDS_ATTR, FAIL_REASON_ATTR,
                               INTERRUPTED_ATTR, PARAM_COUNT_ATTR, PLANNED_EPOCHS_ATTR, PRUNE_REASON_ATTR,
                               STARTUP_SECONDS_ATTR)
from imgsearch.trials.memory import check_memory
from imgsearch.trials.ensemble import build_ensemble
from imgsearch.trials.families import share_deadline
from imgsearch.trials.fidelity import subset, trial_fraction
from imgsearch.trials.callbacks import EpochTimer, check_preparation, check_startup
from imgsearch.trials.training import plan_epochs, train
from imgsearch.spaces import SearchSpace
from imgsearch.storage.files import DiskFull, disk_full_message, is_disk_full


class Objective:
    """Callable for ``study.optimize``: returns a trial's best validation accuracy.

    Every trial gets an MLflow child run whose final state mirrors the Optuna state
    (complete, pruned, failed). ``seed`` (when set) seeds Keras per trial with
    ``seed + trial.number``. The Keras session is cleared after every trial, so memory does
    not grow with the number of trials.

    A trial whose epoch would take longer than ``max_epoch_seconds`` is pruned (None: the
    default cap, 0: none; ``budget.epoch_limit``).

    With a ``target`` (TRIALS), a trial that the trials before it already make unnecessary
    is pruned as surplus before anything else, without an MLflow run (search/trials/trial_target.py).

    With a ``deadline`` (``time.monotonic()`` seconds, from BUDGET) a trial cuts its epochs
    to end before it, is pruned when it cannot train a worthwhile share of them, and one
    still running at the deadline stops at its next epoch end, COMPLETE with the best value
    it reached (user attr ``stopped_at_deadline``: the epoch it stopped after). The
    end-of-budget step's trial (``ENSEMBLE_STEP_ATTR``, search/trials/ensemble.py) builds an
    ensemble of kept models instead, by ``final_deadline`` (the budget's end; default ``deadline``).

    A trial that trains on images trains on its ``data_fraction`` of them (search/trials/fidelity.py:
    the one it was queued with, else ``exploring``); one that does not (a head on kept features)
    on all of them.
    """

    def __init__(self, space: SearchSpace, data: Dataset, epochs: int, tracker: Tracker,
                 checkpoint: BestCheckpoint, fixed: dict, seed: int | None = None,
                 max_epoch_seconds: float | None = None, target: int | None = None,
                 deadline: float | None = None, final_deadline: float | None = None, exploring: float = 1.0):
        self.space, self.data, self.epochs = space, data, epochs
        self.tracker, self.checkpoint, self.fixed, self.seed = tracker, checkpoint, fixed, seed
        self.max_epoch_seconds, self.target, self.deadline = max_epoch_seconds, target, deadline
        self.final_deadline = deadline if final_deadline is None else final_deadline
        self.exploring, self._subsets = exploring, {}
        space.prepare(data)
        # What is alive now (TensorFlow, Keras, MLflow, the dataset) lives as long as the
        # process: moved out of the collector's view, each trial's gc.collect() only walks
        # what the trial made (measured 0.46 s per collection before, under load).
        gc.freeze()

    def __call__(self, trial: optuna.Trial) -> float:
        with signals.deferred():  # a signal stops the trial between batches, not inside TensorFlow
            return self._run(trial, self._ensemble if trial.user_attrs.get(ENSEMBLE_STEP_ATTR) else self._train)

    def _train(self, trial: optuna.Trial, run: TrialRun, plan: EpochPlan, timer: EpochTimer):
        """Build the trial's model from its space and train it: (value, model)."""
        candidate = self.space.build(trial, self.data.image_shape, self.data.num_classes)
        if self.space.family_param:  # SPACE=auto: a family that does not lead trains on a share of the time
            share = share_deadline(trial, self.space.family_param, plan.deadline, time.monotonic())
            if share is not None:
                plan.deadline, plan.limit = share, "the share of a family that does not lead"
        split = plan_epochs(candidate.phases, self.epochs)
        epochs = ({f"epochs_{phase.name}": n for phase, n in zip(candidate.phases, split)}
                  if len(split) > 1 else {})
        fraction = trial_fraction(trial, self.exploring if candidate.image_batch_size else 1.0)
        run.log_params(trial.params, derived={**candidate.details, **epochs, "data_fraction": fraction})
        check_memory(candidate)
        check_preparation(candidate.preparation_seconds, plan)
        timer.prepared = candidate.preparation_seconds > 0
        check_startup(trial, timer, self.deadline)
        return train(self.space, candidate, plan, self._data(fraction), trial, run, timer)

    def _data(self, fraction: float) -> Dataset:
        """The training data at ``fraction``, made once per fraction in this process."""
        if fraction not in self._subsets:
            self._subsets[fraction] = subset(self.data, fraction)
        return self._subsets[fraction]

    def _ensemble(self, trial: optuna.Trial, run: TrialRun, plan: EpochPlan, timer: EpochTimer):
        """The end-of-budget step (search/trials/ensemble.py): (value, model)."""
        return build_ensemble(trial, self.checkpoint, self.data, run, self.final_deadline)

    def _run(self, trial: optuna.Trial, work) -> float:
        claim(trial, self.target)
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed + trial.number)
        try:
            run = self.tracker.trial_run(trial, self.fixed)
        except TrackingLost as exc:
            trial.set_user_attr(INTERRUPTED_ATTR, True)
            trial.set_user_attr(FAIL_REASON_ATTR, str(exc)[:500])
            raise
        plan = EpochPlan(self.epochs, self.deadline)
        timer = None
        try:  # from here on the run ends in the state the trial ends in, whatever raises
            timer = EpochTimer(*epoch_limit(trial.study, self.max_epoch_seconds), plan=plan)
            signals.raise_pending()  # one that came while the trial started
            value, model = work(trial, run, plan, timer)
            trial.set_user_attr(PARAM_COUNT_ATTR, model.count_params())
            if plan.stopped_at_deadline is not None:
                trial.set_user_attr(DEADLINE_ATTR, plan.stopped_at_deadline)
                run.set_tag(DEADLINE_ATTR, str(plan.stopped_at_deadline))
            self.checkpoint.offer(trial, value, model)
            signals.raise_pending()
        except optuna.TrialPruned as exc:
            reason = str(exc) or None
            self._close(run, trial, "PRUNED", reason=reason)
            if reason:
                trial.set_user_attr(PRUNE_REASON_ATTR, reason)
            raise
        except BaseException as exc:  # the MLflow run first: the study database may be what failed
            reason = (f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__).splitlines()[0][:500]
            if is_disk_full(exc):  # Progress stops the search at once on this reason
                reason = str(exc) if isinstance(exc, DiskFull) else disk_full_message(reason)
            if isinstance(exc, (KeyboardInterrupt, TrackingLost)):  # not the trial's fault: queued again on resume
                trial.set_user_attr(INTERRUPTED_ATTR, True)
            self._close(run, trial, "FAIL", reason=reason, traceback=traceback.format_exc())
            trial.set_user_attr(FAIL_REASON_ATTR, str(self.tracker.lost)[:500] if self.tracker.lost else reason)
            raise
        else:
            self._close(run, trial, "COMPLETE", value=value)
            return value
        finally:
            with contextlib.suppress(TrackingLost):
                if plan.total < self.epochs:
                    trial.set_user_attr(PLANNED_EPOCHS_ATTR, plan.total)
                    run.log_metrics({PLANNED_EPOCHS_ATTR: plan.total})
                if timer is not None and timer.seconds is not None:
                    trial.set_user_attr(EPOCH_SECONDS_ATTR, timer.seconds)
                    run.log_metrics({EPOCH_SECONDS_ATTR: timer.seconds})
                if timer is not None and timer.startup is not None and not timer.prepared:
                    trial.set_user_attr(STARTUP_SECONDS_ATTR, timer.startup)
            # clear_session's own free_memory runs gc.collect() a second time; one is enough.
            keras.backend.clear_session(free_memory=False)
            gc.collect()

    def _close(self, run: TrialRun, trial: optuna.Trial, state: str, **details) -> None:
        """End the trial's run in ``state``; with the tracking store lost, the trial still ends as it
        would (the study keeps it) and ``Tracker.repair`` ends the run once the store is back."""
        if self.tracker.lost is None:
            with contextlib.suppress(TrackingLost):
                run.finish(trial, state, **details)
