"""The record's vocabulary: every name a search writes into the study (user attrs) and into
MLflow (tags, metrics) beside a trial's params and values, in one place.

These names are stored: a study or an MLflow store written by one version is read by the
next (resume, workers, export, report), so a name here changes only with a migration.
"""

import os
import socket

# Trial user attr FRACTION_ATTR: the share of the training images it trained on (also a param of
# its run). Named in spaces/scale.py, where a starting point says it; re-exported here.
from imgsearch.spaces.scale import FRACTION_ATTR  # noqa: F401

# The metric Optuna maximises: Keras's name for it, and the study's metric name.
OBJECTIVE = "val_accuracy"
OBJECTIVE_METRIC = "objective"  # MLflow metric on a complete trial's run: its value in the study

# Study user attrs.
SETTINGS_ATTR = "settings"  # what the study is (search/settings.py STUDY_KEYS), fixed at creation
SPACE_OPTIONS = "space_options"  # the key, in the recorded settings, of the space's own settings
FINGERPRINT = "data_fingerprint"  # the key, in a study on arrays' recorded settings, of their fingerprint
PARENT_RUN_ATTR = "mlflow_parent_run_id"  # the study's MLflow run
BEST_RUN_ATTR = "mlflow_best_run_id"  # the run that carries the BEST_TAG
BUDGET_ATTR = "budget_seconds"  # the BUDGET its last search began with (none: that search had no budget)

# Trial user attrs.
RUN_ID_ATTR = "mlflow_run_id"  # the trial's MLflow run
WORKER_ATTR = "worker"  # host:pid of the process that runs the trial (also a run tag)
WORKER = f"{socket.gethostname()}:{os.getpid()}"  # this process, as WORKER_ATTR names it
LOCAL_WORKER = "IMGSEARCH_WORKER"  # environment variable: the index of a WORKERS=N search's worker process
FAIL_REASON_ATTR = "fail_reason"  # why a trial failed, one line
PRUNE_REASON_ATTR = "prune_reason"  # why a trial was pruned (also the run tag's name)
SURPLUS_ATTR = "surplus"  # pruned as not needed for TRIALS (search/trials/trial_target.py); does not count
EPOCH_SECONDS_ATTR = "epoch_seconds"  # the slowest epoch's projected seconds (also a metric)
PLANNED_EPOCHS_ATTR = "planned_epochs"  # the epochs the trial planned, once cut to fit the budget
INTERRUPTED_ATTR = "interrupted"  # failed by an interruption (a signal, a lost tracking store), not by itself
RETRY_OF_ATTR = "retry_of"  # on a trial queued again: the number of the interrupted trial it repeats
DEADLINE_ATTR = "stopped_at_deadline"  # the epoch (from 1) after which the budget's deadline stopped it
ENSEMBLE_STEP_ATTR = "ensemble_step"  # on the end-of-budget step's trial (search/trials/ensemble.py)
ENSEMBLE_OF_ATTR = "ensemble_of"  # on the ensemble step's trial: its members' trial numbers
ENSEMBLE_WEIGHTS_ATTR = "ensemble_weights"  # and their weights (summing to 1), in that order
STARTUP_SECONDS_ATTR = "startup_seconds"  # from the trial's start to the end of its first batch
PARAM_COUNT_ATTR = "param_count"  # the trained model's parameters (also a metric of its run)
PROMOTED_FROM_ATTR = "promoted_from"  # on a trial queued on all the data: the low-fidelity trial it repeats

# The export's files, in RUNS_DIR/exports/<study>/ (search/results/export.py).
MODEL_FILE = "model.keras"  # the best model, Keras's own layers only
INFO_FILE = "model.json"  # what it takes and returns: input shape, class names, the trial

# MLflow run tags.
BEST_TAG = "best"  # "true" on the study's best trial's run, and on no other run
STATE_TAG = "optuna.state"  # the trial's final Optuna state
FAILURE_REASON_TAG = "failure_reason"  # why a failed trial's run failed


def family_of(trial) -> str | None:
    """The family of model a trial was: ``ensemble`` for the end-of-budget step's trial, the
    ``family`` param of a SPACE=auto trial, None otherwise."""
    if trial.user_attrs.get(ENSEMBLE_STEP_ATTR):
        return "ensemble"
    return trial.params.get("family")
