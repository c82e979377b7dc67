"""MLflow tracking: one parent run per study, one nested child run per trial.

optuna-integration's MLflowCallback is not used: it creates a trial's run only after the
trial has finished (no live per-epoch curves, nothing for a trial that dies) and nests
runs only under an active run of the same process. Here the parent run's id lives in the
study's user attrs and children point at it with the ``mlflow.parentRunId`` tag, so
nesting holds across processes and machines.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import optuna
from mlflow.entities import LoggedModelStatus, Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from imgsearch.ranking import best_of
from imgsearch.trials.describe import ended
from imgsearch.trials.trial_notes import TrialNotes
from imgsearch.storage.errors import UserError
from imgsearch.storage.files import is_disk_full
from imgsearch.storage.machine import alive
from imgsearch.storage.urls import mask_url
from imgsearch.records import (BEST_RUN_ATTR, BEST_TAG, FAIL_REASON_ATTR, FAILURE_REASON_TAG, OBJECTIVE, OBJECTIVE_METRIC,
                            PARENT_RUN_ATTR, PRUNE_REASON_ATTR, RUN_ID_ATTR, STATE_TAG, WORKER,
                            WORKER_ATTR)

_STATUS = {"COMPLETE": RunStatus.FINISHED, "PRUNED": RunStatus.KILLED, "FAIL": RunStatus.FAILED}
_STATE_WORDS = {"RUNNING": "running", "COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed"}
# Without this tag MLflow 3's UI opens an experiment on its GenAI "traces" view, not on the runs.
_EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
EXPORTER_TAG = "imgsearch.exporter"  # on a logged model: host:pid of the process that logs it
_FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)


class TrackingLost(UserError):
    """The MLflow tracking store stopped answering (MLflow's own retries, bounded in
    ``search/__init__.py``, ran out): the search stops, as for a lost study database."""


def is_tracking_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) means the tracking store could not be
    reached, as opposed to a request it refused: MLflow's client says "API request to ...
    failed with exception ..." once its retries ran out; a database store, SQLAlchemy's
    OperationalError."""
    from sqlalchemy.exc import OperationalError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, TrackingLost):
            return True
        if isinstance(exc, MlflowException) and str(exc.message).startswith("API request to ") \
                and " failed with " in str(exc.message):
            return True
        if isinstance(exc, (ConnectionError, OperationalError)) and not is_disk_full(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


class TrackingClient:
    """An MlflowClient whose calls fail fast once the tracking store is lost.

    The first call that finds the store unreachable raises TrackingLost (one line for the
    user, the address masked) and so does every later call, at once: without this, each of a
    closing trial's calls would wait out MLflow's retries again. ``lost`` is set then.
    """

    def __init__(self, tracking_uri: str):
        self._client, self.tracking_uri = MlflowClient(tracking_uri), tracking_uri
        self.lost: TrackingLost | None = None

    def __getattr__(self, name: str):
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def call(*args, **kwargs):
            if self.lost is not None:
                raise self.lost
            try:
                return method(*args, **kwargs)
            except Exception as exc:
                if not is_tracking_lost(exc):
                    raise
                reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                self.lost = TrackingLost(f"MLflow tracking store {mask_url(self.tracking_uri)} stopped answering "
                                         f"({reason}); the trials that finished are kept: run the same command "
                                         "again once it is back")
                raise self.lost from None

        return call


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
    is local; None lets a tracking server choose. With ``mlflow_ui`` (the UI's address), each
    finished trial gets a dashboard note linking to its run, and its learning curves and model
    summary as Optuna artifacts in ``optuna_artifacts`` (search/trials/trial_notes.py).
    """

    def __init__(self, tracking_uri: str, study: optuna.Study, settings: dict, artifact_root: Path | None = None,
                 mlflow_ui: str | None = None, optuna_artifacts: Path | None = None):
        self.client = TrackingClient(tracking_uri)
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
        self.notes = TrialNotes(mlflow_ui, self.experiment_id, optuna_artifacts) if mlflow_ui else None

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
        return TrialRun(self.client, run.info.run_id, fixed, self.notes)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback: the best value so far on the parent run (``best_val_accuracy``, its
        step the number of finished trials, so the latest value is the study's best), and the
        ``best`` tag moved to the best trial's run."""
        finished = study.get_trials(deepcopy=False, states=_FINISHED)
        best = best_of(finished)
        if best is None or self.lost:  # a lost store: the search stops, a re-run repairs
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

    @property
    def lost(self) -> TrackingLost | None:
        return self.client.lost

    def repair(self) -> list[int]:
        """Put right what a process that died or lost the tracking store left behind: a trial
        run still RUNNING whose trial has finished gets the trial's state, reason and (complete)
        objective; a logged model still PENDING whose exporting process of this host is gone is
        FAILED. Returns the trial numbers whose runs were ended."""
        trials = {t.number: t for t in self.study.get_trials(deepcopy=False)}
        running = self.client.search_runs(
            [self.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' and attributes.status = 'RUNNING'")
        repaired = []
        for run in running:
            trial = trials.get(int(run.data.tags.get("optuna.trial", -1)))
            if trial is None or not trial.state.is_finished():
                continue  # its worker may still run it; a dead one's goes stale (search/trials/stale_trials.py)
            state = trial.state.name
            if state == "COMPLETE":
                points = [(m.step, m.value) for m in self.client.get_metric_history(run.info.run_id, OBJECTIVE)]
                self.client.log_metric(run.info.run_id, OBJECTIVE_METRIC, trial.value,
                                       step=best_step(points, trial.value))
            reason = trial.user_attrs.get(FAIL_REASON_ATTR if state == "FAIL" else PRUNE_REASON_ATTR)
            end_run(self.client, run.info.run_id, trial.number, state, reason)
            repaired.append(trial.number)
        self.fail_pending_models(lambda pid: not alive(pid))
        return sorted(repaired)

    def _logged_models(self) -> list:
        """Every logged model of the study's experiment. Filtered here, not by MLflow: its filter on
        ``status`` fails on a PostgreSQL store (it compares the integer column with a string)."""
        models, token = [], None
        while True:
            page = self.client.search_logged_models([self.experiment_id], max_results=100, page_token=token)
            models += list(page)
            token = page.token
            if not token:
                return models

    def fail_pending_models(self, of: Callable[[int], bool]) -> None:
        """Mark FAILED the logged models still PENDING that a process of this host logs and
        ``of(its pid)`` picks, and delete what a local store holds of their files (half a
        model.keras, say)."""
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        for model in self._logged_models():
            host, _, pid = model.tags.get(EXPORTER_TAG, "").rpartition(":")
            if model.status == LoggedModelStatus.PENDING and host == WORKER.rpartition(":")[0] and pid.isdigit() \
                    and of(int(pid)):
                location = urlparse(model.artifact_location or "")
                if location.scheme == "file":  # first: on a full disk, this frees the space to say FAILED
                    shutil.rmtree(url2pathname(location.path), ignore_errors=True)
                self.client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)

    def reopen(self) -> None:
        """Mark the parent run RUNNING: this process is about to add trials to the study. First
        ``repair`` what an earlier process left behind."""
        self.repair()
        self.client.update_run(self.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))

    def end(self, reached_target: bool) -> None:
        """End the parent run: FINISHED when the study reached its target, else KILLED (a
        resumed search reopens it). Call it only when no worker runs a trial any more."""
        status = RunStatus.FINISHED if reached_target else RunStatus.KILLED
        self.client.set_terminated(self.parent_run_id, RunStatus.to_string(status))


def _shown(key: str, value: float) -> float:
    """An epoch metric as MLflow stores it: NaN for an infinite one, and an accuracy or a loss to 7
    significant digits (float32's): 0.563, not 0.5630000233650208."""
    if not math.isfinite(value):
        return float("nan")
    return float(f"{value:.7g}") if "accuracy" in key or "loss" in key else value


def _now() -> int:
    return int(time.time() * 1000)


def best_step(points: list[tuple[int, float]], value: float) -> int:
    """The first epoch (step) of (step, val_accuracy) ``points`` that reached ``value``; 0 when none did."""
    return next((step for step, v in sorted(points) if v >= value), 0)


class TrialRun:
    """One trial's MLflow run: params, per-epoch metrics, model info, final state."""

    def __init__(self, client: MlflowClient, run_id: str, fixed: dict, notes: TrialNotes | None = None):
        self.client, self.run_id, self.fixed, self.notes = client, run_id, fixed, notes
        self.objective_points: list[tuple[int, float]] = []  # (step, val_accuracy) of each epoch
        self.curves: dict[str, list[tuple[int, float]]] = {}  # every epoch metric: (step, value)
        self.summary: str | None = None
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
        for key, value in finite.items():
            self.curves.setdefault(key, []).append((step, value))
        timestamp = _now()
        self.client.log_batch(self.run_id, metrics=[Metric(k, _shown(k, v), timestamp, step) for k, v in finite.items()])
        if OBJECTIVE in finite:
            self.objective_points.append((step, finite[OBJECTIVE]))

    def log_model_info(self, param_count: int, summary: str) -> None:
        self.summary = summary
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
        if self.notes is not None:
            how = ended(state, value, reason or ("by the pruner" if state == "PRUNED" else "no reason recorded"))
            self.notes.write(trial, how, self.run_id, self.summary, self.curves)
