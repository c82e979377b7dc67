"""``Search``: one process's part in a study: its trials, the study callbacks and why it stops.
It is built from the settings in one place, ``command_line/commands.py``'s ``prepare``, which the
commands, the Python API, the tests and the benchmarks all use."""

from __future__ import annotations

import enum
import time

import optuna

from imgsearch.datasets import Dataset
from imgsearch.trials.checkpoints import BestCheckpoint
from imgsearch.trials.tracking import Tracker, TrackingLost
from imgsearch.trials import ensemble, signals
from imgsearch.trials.budget import Budget
from imgsearch.trials.fidelity import Promote
from imgsearch.trials.objective import Objective
from imgsearch.trials.process_restart import TrialsPerProcess
from imgsearch.trials.progress import Progress, StopWhenFailing
from imgsearch.trials.stale_trials import RetryStaleTrial, retire_unneeded_retries
from imgsearch.trials.trial_target import StopAtTarget, live_running, reached
from imgsearch.spaces import SearchSpace
from imgsearch.storage.reconnect import DatabaseLost


class Stop(enum.Enum):
    """Why ``Search.run`` returned."""

    TARGET = "the study has its TRIALS"
    BUDGET = "the budget is spent"
    RESTART = "this process ran its TRIALS_PER_PROCESS trials"
    FAILING = "trials keep failing"  # ``Search.failing_because`` says how


class Search:
    """Trials for ``study`` (kept in ``storage``) until it has ``target`` finished ones (None: no target), the
    ``budget`` runs out (its seconds, None: none; its trials plan ``budget.epochs`` epochs),
    ``trials_per_process`` trials ran here (0: never), or trials keep failing (five in a row,
    or one on a full disk).

    It owns the objective (``space`` trained on ``data``, each trial an MLflow run of
    ``tracker``, the best model kept by ``checkpoint``; ``fixed``, ``seed`` and
    ``max_epoch_seconds`` as ``Objective`` takes them) and the study callbacks: the target,
    the budget, the checkpoint, the best-run tag, the progress lines, the stop when trials
    keep failing, the process's trial count, the signals, and the promotion to all the data of
    the best trials that explored on ``exploring`` of it (search/trials/fidelity.py). It also makes the storage queue
    again, while the target still needs it, a trial whose worker died (no heartbeat). With a budget, a space that
    ``ends_with_ensemble`` (SPACE=auto) keeps the budget's last seconds and its best models for
    the end-of-budget step (search/trials/ensemble.py), which the last worker to stop runs.

    Other workers' running trials count towards the target, and a trial started when the
    target was already taken is not needed (search/trials/trial_target.py), so the workers
    together do not overshoot it; when a running trial then fails, this process waits for
    the rest and goes on.
    """

    def __init__(self, study: optuna.Study, storage: optuna.storages.BaseStorage, space: SearchSpace, data: Dataset,
                 tracker: Tracker, checkpoint: BestCheckpoint, *, budget: Budget, fixed: dict, seed: int | None = None,
                 target: int | None = None, max_epoch_seconds: float | None = None, trials_per_process: int = 0,
                 exploring: float = 1.0):
        self.study, self.tracker, self.checkpoint, self.target, self.budget = study, tracker, checkpoint, target, budget
        self.ends_with_ensemble = space.ends_with_ensemble and self.budget.seconds is not None
        if self.ends_with_ensemble:
            self.budget.keep_for_ending(ensemble.reserve_seconds(self.budget.seconds))
            checkpoint.keep_for_ensemble(ensemble.MEMBERS)
        self.storage = storage  # the study's (open_storage's), which Optuna wraps in a cache
        storage.heartbeat_stale_trial_callback = RetryStaleTrial(tracker.client, target=target)
        self.progress = Progress(target, budget=self.budget)
        self.failing = StopWhenFailing()
        self.trial_count = TrialsPerProcess(trials_per_process)
        self.objective = Objective(space, data, budget.epochs, tracker, checkpoint, fixed=fixed, seed=seed,
                                   max_epoch_seconds=max_epoch_seconds, target=target,
                                   deadline=self.budget.training_deadline, final_deadline=self.budget.deadline,
                                   exploring=exploring)
        self.callbacks = [*([StopAtTarget(target)] if target is not None else []), self.budget,
                          checkpoint.after_trial, tracker.after_trial, self.progress, self.failing, self.trial_count,
                          self._stop_if_tracking_lost, signals.after_trial, Promote()]

    @property
    def failing_because(self) -> str | None:
        return self.failing.stopped_because

    def why(self, stop: Stop) -> str:
        """``stop`` in words, with the numbers that made it."""
        if stop is Stop.TARGET:
            return f"the study has its {self.target} finished trials (TRIALS)"
        if stop is Stop.BUDGET:
            return self.budget.ended_because if self.budget.ended else Stop.BUDGET.value
        if stop is Stop.FAILING:
            return self.failing_because
        return stop.value

    def reached(self) -> bool:
        return reached(self.study, self.target)

    def run(self) -> Stop:
        """Add trials; return why this process stopped. The last worker to stop ends the
        study's MLflow parent run (a lost database ends nothing: it raises DatabaseLost)."""
        self.tracker.reopen()
        try:
            while not self.reached() and self.budget.time_left():
                self.study.optimize(self.objective, timeout=self.budget.training_left(), catch=(Exception,),
                                    callbacks=self.callbacks)
                if self.tracker.lost:
                    raise self.tracker.lost
                if self.failing_because or self.trial_count.exhausted or self.budget.ended:
                    break
                while live_running(self.study) and self.budget.time_left():
                    time.sleep(1)  # the other workers' trials may still fail
                    optuna.storages.fail_stale_trials(self.study)
            if self.ends_with_ensemble and not (self.failing_because or self.reached() or self.budget.time_left()):
                self.end_with_ensemble()
                if self.tracker.lost:
                    raise self.tracker.lost
        except TrackingLost:
            raise
        except Exception:
            # Optuna can mask a storage error with its own (an UnboundLocalError when it cannot
            # read back the trial it failed to tell): a lost database is the real cause.
            if getattr(self.storage, "lost", None):
                raise self.storage.lost from None
            raise
        finally:
            self.end_parent_run_if_last()
        if self.failing_because:
            return Stop.FAILING
        if self.reached():
            return Stop.TARGET
        if self.trial_count.exhausted and self.budget.time_left():
            return Stop.RESTART
        return Stop.BUDGET

    def end_with_ensemble(self) -> None:
        """The end-of-budget step (search/trials/ensemble.py), by the last worker to stop, in the
        seconds the budget kept for it."""
        if live_running(self.study) or not self.budget.left() or self.budget.left() <= 0:
            return
        if ensemble.queue_ensemble_step(self.study):
            self.study.optimize(self.objective, n_trials=1, catch=(Exception,), callbacks=self.callbacks)

    def _stop_if_tracking_lost(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback: a lost tracking store ends the search (``run`` raises it), as a lost
        study database does: the trials that finished are kept, a re-run repairs the runs."""
        if self.tracker.lost:
            study.stop()

    def end_parent_run_if_last(self) -> None:
        """While another worker still runs a trial, the parent stays RUNNING."""
        if self.tracker.lost:
            return
        try:
            optuna.storages.fail_stale_trials(self.study)
            if not live_running(self.study):
                if self.reached():
                    retire_unneeded_retries(self.study, self.storage, self.target)
                self.tracker.end(reached_target=self.target is None or self.reached())
        except DatabaseLost:
            pass

