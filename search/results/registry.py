"""What an export records in MLflow beyond the runs: the model logged into the best trial's run
and registered (MLflow's model registry), the registered version described and tagged, and the
exported trial's learning curves."""

from __future__ import annotations

import os

import optuna
from mlflow.exceptions import MlflowException

from imgsearch.figures import learning_curves
from imgsearch.records import OBJECTIVE, OBJECTIVE_METRIC, RUN_ID_ATTR, WORKER
from imgsearch.trials.tracking import EXPORTER_TAG, Tracker


def log_model(tracker: Tracker, trial: optuna.trial.FrozenTrial, model, **log_kwargs):
    """Log ``model`` (``mlflow.models.Model.log``'s keyword arguments) into ``trial``'s run, or the
    parent run when the store no longer has it, without making it MLflow's active run: its
    status is never changed, so no interruption can leave it RUNNING. The logged model is
    tagged with this process (``EXPORTER_TAG``): ``Tracker.repair`` fails it should the process die
    before MLflow marks it READY."""
    import mlflow.keras
    from mlflow.models import Model

    run_id = trial.user_attrs.get(RUN_ID_ATTR) or tracker.parent_run_id
    try:
        tracker.client.get_run(run_id)
    except MlflowException:
        run_id = tracker.parent_run_id
    # MLflow's fluent API sets these in os.environ, where every later command and child process of
    # this one (a notebook's, with the Python API) would find them: they are put back afterwards.
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID")}
    try:
        mlflow.set_tracking_uri(tracker.tracking_uri)  # Model.log's own client and the registry's,
        mlflow.set_experiment(experiment_id=tracker.experiment_id)  # and the logged model's experiment
        return Model.log(artifact_path=None, flavor=mlflow.keras, model=model, run_id=run_id,
                         tags={EXPORTER_TAG: WORKER}, **log_kwargs)
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def log_learning_curves(tracker: Tracker, trial: optuna.trial.FrozenTrial) -> None:
    """Draw ``trial``'s learning curves from its run's metric history as that run's
    ``learning_curves.png``; nothing when the tracking store no longer has the run.

    Only the exported trial's run gets it (MLflow's UI charts every run's per-epoch metrics
    itself); every trial's copy for the Optuna dashboard is drawn as it ends (trials/trial_notes.py).
    """
    run_id = trial.user_attrs.get(RUN_ID_ATTR)
    try:
        curves = {key: [(m.step, m.value) for m in tracker.client.get_metric_history(run_id, key)]
                  for key in ("loss", "val_loss", "accuracy", OBJECTIVE, "phase")} if run_id else {}
    except MlflowException:
        return  # the tracking store was reset since the trial ran
    if any(curves.values()):
        tracker.client.log_figure(run_id, learning_curves(curves), "learning_curves.png")


def describe_version(tracker: Tracker, name: str, version: str, trial: optuna.trial.FrozenTrial) -> None:
    """Say on a registered model version which trial it is and its value."""
    tracker.client.update_model_version(
        name, version, description=f"trial {trial.number} of study {tracker.study.study_name}: "
                                   f"{OBJECTIVE_METRIC} (best epoch's val_accuracy) {trial.value:.4f}")
    tracker.client.set_model_version_tag(name, version, "optuna.trial", str(trial.number))
    tracker.client.set_model_version_tag(name, version, OBJECTIVE_METRIC, f"{trial.value:.4f}")


def tag_latest_version(tracker: Tracker, name: str, tags: dict[str, str]) -> None:
    """Tag the newest version of registered model ``name`` (the export's), if there is one."""
    versions = tracker.client.search_model_versions(f"name='{name}'")
    if versions:
        latest = max(versions, key=lambda v: int(v.version))
        for key, value in tags.items():
            tracker.client.set_model_version_tag(name, latest.version, key, value)
