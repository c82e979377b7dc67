"""When a worker dies: the others retry its trial, if the study still needs it.

Optuna's heartbeat marks a trial FAIL once its worker has been silent for the grace
period; ``RetryStaleTrial`` (Optuna's retry callback for stale trials) then queues it
again and also ends the dead worker's MLflow run as failed, which Optuna cannot know about.
"""

from __future__ import annotations

import contextlib

import optuna
from mlflow.tracking import MlflowClient

from imgsearch.trials.trial_target import finished_count, live_running
from imgsearch.records import FAIL_REASON_ATTR, RUN_ID_ATTR
from imgsearch.storage.compat import trial_id
from imgsearch.trials.tracking import TrackingLost, end_run

STALE_REASON = "its worker stopped sending heartbeats (killed or lost); the trial was queued again"
STALE_NOT_NEEDED_REASON = ("its worker stopped sending heartbeats (killed or lost); not queued again: "
                           "the finished and running trials already reach TRIALS")


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Queue a stale trial again (at most ``max_retry`` times) and end its MLflow run as failed.

    With a ``target`` (TRIALS), the trial is queued again only while the finished and live
    running trials fall short of it: a dead trial counted as running until it went stale, so
    the other workers may have stopped adding trials, and a copy queued after that would be
    left WAITING in a study that is already done.
    """

    def __init__(self, client: MlflowClient, target: int | None = None, max_retry: int = 3):
        super().__init__(max_retry=max_retry)
        self.client = client
        self.target = target

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        needed = self.target is None or finished_count(study) + len(live_running(study)) < self.target
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            with contextlib.suppress(TrackingLost):  # the search stops on it; a re-run's Tracker.repair ends the run
                end_run(self.client, run_id, trial.number, "FAIL", STALE_REASON if needed else STALE_NOT_NEEDED_REASON)
        if needed:
            super().__call__(study, trial)


def retire_unneeded_retries(study: optuna.Study, storage: optuna.storages.BaseStorage, target: int) -> None:
    """Fail, saying why, the copies of dead workers' trials still WAITING once the study has its
    target: queued while they were needed, they were overtaken by other workers' trials (Optuna
    does not always hand a waiting trial to the next ask of a busy study), and would otherwise
    show as pending for ever. The portfolio's queued trials are left for a later, larger TRIALS."""
    reason = f"not needed: the study reached TRIALS={target} before this copy of a dead worker's trial ran"
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(trial) is not None:
            storage.set_trial_user_attr(trial_id(trial), FAIL_REASON_ATTR, reason)
            storage.set_trial_state_values(trial_id(trial), optuna.trial.TrialState.FAIL)
