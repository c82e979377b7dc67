"""MLflow tracking: one parent run per study, one nested child run per trial.

optuna-integration's MLflowCallback is not used: it creates a trial's run only after the
trial has finished (no live per-epoch curves, nothing for a trial that dies) and nests
runs only under an active run of the same process. Here the parent run's id lives in the
study's user attrs and children point at it with the ``mlflow.parentRunId`` tag, so
nesting holds across processes and machines.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from pathlib import Path
from typing import Iterator

import mlflow
import optuna
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from search.results.checkpoints import best_of
from search.records import (BEST_RUN_ATTR, BEST_TAG, FAILURE_REASON_TAG, OBJECTIVE, OBJECTIVE_METRIC,
                            PARENT_RUN_ATTR, PRUNE_REASON_ATTR, RUN_ID_ATTR, STATE_TAG, WORKER,
                            WORKER_ATTR)

_STATUS = {"COMPLETE": RunStatus.FINISHED, "PRUNED": RunStatus.KILLED, "FAIL": RunStatus.FAILED}
_STATE_WORDS = {"RUNNING": "running", "COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
# Without this tag MLflow 3's UI opens an experiment on its GenAI "traces" view, not on the runs.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


def run_name(trial_number: int, state: str) -> str:
    """A trial run's name, which says its state: MLflow's run list shows pruned and failed
    runs with much the same icon."""
    return f"trial-{trial_number} {_STATE_WORDS[state]}"


def end_run(client: MlflowClient, run_id: str, trial_number: int, state: str, reason: str | None = None) -> None:
    """Give a trial's run its final state: name, ``optuna.state`` tag, why (pruned or failed), status."""
    client.update_run(run_id, name=run_name(trial_number, state))
    client.set_tag(run_id, STATE_TAG, state)
    if reason:
        client.set_tag(run_id, PRUNE_REASON_ATTR if state == "PRUNED" else FAILURE_REASON_TAG, reason[:5000])
    client.set_terminated(run_id, RunStatus.to_string(_STATUS[state]))


class Tracker:
    """The MLflow side of one study (an experiment named after it, holding its parent run).

    ``artifact_root`` is where a new experiment keeps artifacts when the tracking store
    is local; None lets a tracking server choose.
    """

    def __init__(self, tracking_uri: str, study: optuna.Study, settings: dict, artifact_root: Path | None = None):
        self.client = MlflowClient(tracking_uri)
        self.tracking_uri = tracking_uri
        self.study = study
        self.settings = settings
        experiment = self.client.get_experiment_by_name(study.study_name)
        if experiment is None:
            location = (artifact_root / study.study_name).resolve().as_uri() if artifact_root else None
            self.experiment_id = self.client.create_experiment(study.study_name, artifact_location=location,
                                                               tags=dict([_EXPERIMENT_KIND]))
        else:
            self.experiment_id = experiment.experiment_id
            if experiment.tags.get(_EXPERIMENT_KIND[0]) != _EXPERIMENT_KIND[1]:
                self.client.set_experiment_tag(self.experiment_id, *_EXPERIMENT_KIND)
        self.parent_run_id = self._parent_run()

    def _parent_run(self) -> str:
        run_id = self.study.user_attrs.get(PARENT_RUN_ATTR)
        if run_id:
            try:
                self.client.get_run(run_id)
                return run_id
            except MlflowException:
                pass  # tracking store was reset: start a new parent
        run = self.client.create_run(
            self.experiment_id, run_name=self.study.study_name, tags={"optuna.study": self.study.study_name}
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in self.settings.items()])
        self.study.set_user_attr(PARENT_RUN_ATTR, run.info.run_id)
        return run.info.run_id

    def trial_run(self, trial: optuna.Trial, fixed: dict) -> TrialRun:
        """A new child run for ``trial``, its id stored as the trial's user attr; this worker
        (host:pid) and the GPUs it may use (CUDA_VISIBLE_DEVICES, when set) are tags of the run."""
        gpus = os.environ.get("CUDA_VISIBLE_DEVICES")
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name(trial.number, "RUNNING"),
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "optuna.study": self.study.study_name,
                "optuna.trial": str(trial.number),
                WORKER_ATTR: WORKER,
                **({"cuda_visible_devices": gpus} if gpus is not None else {}),
            },
        )
        try:
            trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
        except BaseException as exc:  # the study database is gone: the run must not stay RUNNING
            end_run(self.client, run.info.run_id, trial.number, "FAIL",
                    f"cannot store the run's id in the study: {type(exc).__name__}: {exc}")
            raise
        return TrialRun(self.client, run.info.run_id, fixed)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback: the best value so far on the parent run (``best_val_accuracy``, its
        step the number of finished trials, so the latest value is the study's best), and the
        ``best`` tag moved to the best trial's run."""
        finished = study.get_trials(deepcopy=False, states=_FINISHED)
        best = best_of(finished)
        if best is None:
            return
        self.client.log_metric(self.parent_run_id, "best_val_accuracy", best.value, step=len(finished))
        self.mark_best(best)

    def mark_best(self, best: optuna.trial.FrozenTrial, check_all: bool = False) -> None:
        """Put the ``best`` tag on ``best``'s run and take it off every other run of the study.

        Only when the best trial changed, unless ``check_all``: then also any marker that two
        workers moving it at once left behind is cleared.
        """
        run_id = best.user_attrs.get(RUN_ID_ATTR)
        if run_id is None or (run_id == self.study.user_attrs.get(BEST_RUN_ATTR) and not check_all):
            return
        marked = self.client.search_runs([self.experiment_id], filter_string=f"tags.{BEST_TAG} = 'true'")
        for run in marked:
            if run.info.run_id != run_id:
                try:
                    self.client.delete_tag(run.info.run_id, BEST_TAG)
                except MlflowException as exc:  # another worker moving the tag took it off first
                    if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                        raise
        self.client.set_tag(run_id, BEST_TAG, "true")
        self.study.set_user_attr(BEST_RUN_ATTR, run_id)

    def log_to_parent(self, metrics: dict[str, float], files: list[Path], artifact_path: str = "evaluation") -> None:
        if metrics:
            self.client.log_batch(self.parent_run_id,
                                  metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])
        for path in files:
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path=artifact_path)

    @contextlib.contextmanager
    def active_run_of(self, trial: optuna.trial.FrozenTrial) -> Iterator[str]:
        """``trial``'s run (the parent run when the store no longer has it) as MLflow's active
        run, for what logs only into the active run (``mlflow.keras.log_model``); its status
        and end time are put back afterwards."""
        run_id = trial.user_attrs.get(RUN_ID_ATTR) or self.parent_run_id
        try:
            info = self.client.get_run(run_id).info
        except MlflowException:
            run_id, info = self.parent_run_id, self.client.get_run(self.parent_run_id).info
        mlflow.set_tracking_uri(self.tracking_uri)
        with mlflow.start_run(run_id=run_id):
            yield run_id
        if info.status == RunStatus.to_string(RunStatus.RUNNING):
            self.client.update_run(run_id, status=info.status)
        else:
            self.client.set_terminated(run_id, info.status, end_time=info.end_time)

    def log_learning_curves(self, trial: optuna.trial.FrozenTrial) -> None:
        """Draw ``trial``'s learning curves from its run's metric history as that run's
        ``learning_curves.png``; nothing when the tracking store no longer has the run.

        Only for the exported trial: drawing a PNG took ~0.27 s, more than the rest of a
        trial's bookkeeping, and MLflow's UI charts every run's per-epoch metrics itself.
        """
        run_id = trial.user_attrs.get(RUN_ID_ATTR)
        try:
            curves = {key: [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]
                      for key in ("loss", "val_loss", "accuracy", OBJECTIVE, "phase")} if run_id else {}
        except MlflowException:
            return  # the tracking store was reset since the trial ran
        if any(curves.values()):
            self.client.log_figure(run_id, learning_curves(curves), "learning_curves.png")

    def describe_version(self, name: str, version: str, trial: optuna.trial.FrozenTrial) -> None:
        """Say on a registered model version which trial it is and its value."""
        self.client.update_model_version(
            name, version, description=f"trial {trial.number} of study {self.study.study_name}: "
                                       f"{OBJECTIVE_METRIC} (best epoch's val_accuracy) {trial.value:.4f}")
        self.client.set_model_version_tag(name, version, "optuna.trial", str(trial.number))
        self.client.set_model_version_tag(name, version, OBJECTIVE_METRIC, repr(trial.value))

    def reopen(self) -> None:
        """Mark the parent run RUNNING: this process is about to add trials to the study."""
        self.client.update_run(self.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))

    def end(self, reached_target: bool) -> None:
        """End the parent run: FINISHED when the study reached its target, else KILLED (a
        resumed search reopens it). Call it only when no worker runs a trial any more."""
        status = RunStatus.FINISHED if reached_target else RunStatus.KILLED
        self.client.set_terminated(self.parent_run_id, RunStatus.to_string(status))


def learning_curves(curves: dict[str, list[tuple[int, float]]]) -> Figure:
    """Loss and accuracy per epoch from (step, value) ``curves`` keyed by metric name; a dotted
    line where a new training phase starts (metric ``phase``).

    A bare Figure, not pyplot's: no global figure registry to close, and no tight_layout
    pass (fixed margins).
    """
    fig = Figure(figsize=(8, 3), dpi=80)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    phases = sorted(curves.get("phase", []))
    starts = [step for (step, phase), (_, before) in zip(phases[1:], phases) if phase != before]
    for ax, kind in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for step in starts:
            ax.axvline(step + 0.5, color="grey", linestyle=":")
        for key in (kind, f"val_{kind}"):
            points = sorted(curves.get(key, []))
            if points:
                steps, values = zip(*points)
                ax.plot([s + 1 for s in steps], values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(kind)
        ax.legend()
    return fig


def _now() -> int:
    return int(time.time() * 1000)


def best_step(points: list[tuple[int, float]], value: float) -> int:
    """The first epoch (step) of (step, val_accuracy) ``points`` that reached ``value``; 0 when none did."""
    return next((step for step, v in sorted(points) if v >= value), 0)


class TrialRun:
    """One trial's MLflow run: params, per-epoch metrics, model info, final state."""

    def __init__(self, client: MlflowClient, run_id: str, fixed: dict):
        self.client, self.run_id, self.fixed = client, run_id, fixed
        self.objective_points: list[tuple[int, float]] = []  # (step, val_accuracy) of each epoch
        self._logged: set[str] = set()

    def log_params(self, sampled: dict, derived: dict | None = None) -> None:
        """Log the trial's sampled params, values derived from them, and the fixed settings.

        Only names not logged yet are sent, so a space that samples while it trains can
        call this again.
        """
        derived = derived or {}
        clash = (set(sampled) | set(derived)) & set(self.fixed) | set(sampled) & set(derived)
        if clash:
            raise ValueError(f"params logged twice under one name: {sorted(clash)}")
        params = {k: v for k, v in {**self.fixed, **derived, **sampled}.items() if k not in self._logged}
        if params:
            self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
            self._logged.update(params)

    def log_epoch(self, step: int, metrics: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v is not None}
        timestamp = _now()
        self.client.log_batch(
            self.run_id,
            metrics=[Metric(k, v if math.isfinite(v) else float("nan"), timestamp, step) for k, v in finite.items()],
        )
        if OBJECTIVE in finite:
            self.objective_points.append((step, finite[OBJECTIVE]))

    def log_model_info(self, param_count: int, summary: str) -> None:
        self.client.log_metric(self.run_id, "param_count", param_count)
        self.client.log_text(self.run_id, summary, "model_summary.txt")

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])

    def finish(self, trial: optuna.Trial, state: str, value: float | None = None, reason: str | None = None,
               traceback: str | None = None) -> None:
        """Log whatever is still missing and the final state (and why, with a failed trial's
        full ``traceback`` as ``traceback.txt``).

        A complete trial's ``value`` becomes the ``objective`` metric, at the step of the
        epoch that reached it: sorting runs by it gives the study's order.
        """
        self.log_params(trial.params)  # params sampled after the first call, if any
        if traceback:
            self.client.log_text(self.run_id, traceback, "traceback.txt")
        if state == "COMPLETE":
            step = best_step(self.objective_points, value)
            self.client.log_metric(self.run_id, OBJECTIVE_METRIC, value, step=step)
        end_run(self.client, self.run_id, trial.number, state, reason)
