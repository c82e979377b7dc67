"""When a worker dies: the others retry its trial.

Optuna's heartbeat marks a trial FAIL once its worker has been silent for the grace
period; ``RetryStaleTrial`` (Optuna's retry callback for stale trials) then queues it
again and also ends the dead worker's MLflow run as failed, which Optuna cannot know about.
"""

from __future__ import annotations

import optuna
from mlflow.tracking import MlflowClient

from search.tracking import RUN_ID_ATTR, end_run

STALE_REASON = "its worker stopped sending heartbeats (killed or lost); the trial was queued again"


class RetryStaleTrial(optuna.storages.RetryHeartbeatStaleTrialCallback):
    """Queue a stale trial again (at most ``max_retry`` times) and end its MLflow run as failed."""

    def __init__(self, client: MlflowClient, max_retry: int = 3):
        super().__init__(max_retry=max_retry)
        self.client = client

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        if run_id:
            end_run(self.client, run_id, trial.number, "FAIL", STALE_REASON)
        super().__call__(study, trial)
