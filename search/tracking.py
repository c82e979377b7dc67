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
import socket
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import Metric, Param, RunStatus  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

PARENT_RUN_ATTR = "mlflow_parent_run_id"
RUN_ID_ATTR = "mlflow_run_id"
WORKER_ATTR = "worker"  # host:pid of the process that runs the trial
FAIL_REASON_ATTR = "fail_reason"  # why a trial failed, one line
PRUNE_REASON_ATTR = "prune_reason"  # why a trial was pruned
WORKER = f"{socket.gethostname()}:{os.getpid()}"
_STATUS = {"COMPLETE": RunStatus.FINISHED, "PRUNED": RunStatus.KILLED, "FAIL": RunStatus.FAILED}


def default_tracking_uri(mlflow_db: Path) -> str:
    return f"sqlite:///{mlflow_db.resolve()}"


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
            self.experiment_id = self.client.create_experiment(study.study_name, artifact_location=location)
        else:
            self.experiment_id = experiment.experiment_id
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
            run_name=f"trial-{trial.number}",
            tags={
                "mlflow.parentRunId": self.parent_run_id,
                "optuna.study": self.study.study_name,
                "optuna.trial": str(trial.number),
                WORKER_ATTR: WORKER,
                **({"cuda_visible_devices": gpus} if gpus is not None else {}),
            },
        )
        trial.set_user_attr(RUN_ID_ATTR, run.info.run_id)
        return TrialRun(self.client, run.info.run_id, fixed)

    def log_best(self, trial: optuna.trial.FrozenTrial) -> None:
        """Record the study's best value so far on the parent run, one step per trial."""
        try:
            best = self.study.best_value
        except ValueError:
            return
        self.client.log_metric(self.parent_run_id, "best_val_accuracy", best, step=trial.number)

    def log_to_parent(self, metrics: dict[str, float], files: list[Path]) -> None:
        self.client.log_batch(self.parent_run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])
        for path in files:
            self.client.log_artifact(self.parent_run_id, str(path), artifact_path="evaluation")

    def reopen(self) -> None:
        """Mark the parent run RUNNING: this process is about to add trials to the study."""
        self.client.update_run(self.parent_run_id, status=RunStatus.to_string(RunStatus.RUNNING))

    def end(self, reached_target: bool) -> None:
        """End the parent run: FINISHED when the study reached its target, else KILLED (a
        resumed search reopens it). Call it only when no worker runs a trial any more."""
        status = RunStatus.FINISHED if reached_target else RunStatus.KILLED
        self.client.set_terminated(self.parent_run_id, RunStatus.to_string(status))


def _now() -> int:
    return int(time.time() * 1000)


class TrialRun:
    """One trial's MLflow run: params, per-epoch metrics, model info, final state."""

    def __init__(self, client: MlflowClient, run_id: str, fixed: dict):
        self.client, self.run_id, self.fixed = client, run_id, fixed
        self.curves: dict[str, list[tuple[int, float]]] = {}
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
        for key, value in finite.items():
            self.curves.setdefault(key, []).append((step, value))

    def log_model_info(self, param_count: int, summary: str) -> None:
        self.client.log_metric(self.run_id, "param_count", param_count)
        self.client.log_text(self.run_id, summary, "model_summary.txt")

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), _now(), 0) for k, v in metrics.items()])

    def finish(self, trial: optuna.Trial, state: str, reason: str | None = None,
               traceback: str | None = None) -> None:
        """Log whatever is still missing, the learning curves and the final state (and why,
        with a failed trial's full ``traceback`` as ``traceback.txt``)."""
        self.log_params(trial.params)  # params sampled after the first call, if any
        if traceback:
            self.client.log_text(self.run_id, traceback, "traceback.txt")
        if self.curves:
            self.client.log_figure(self.run_id, self._learning_curves(), "learning_curves.png")
        self.set_tag("optuna.state", state)
        if reason:
            self.set_tag("prune_reason" if state == "PRUNED" else "failure_reason", reason[:5000])
        self.client.set_terminated(self.run_id, RunStatus.to_string(_STATUS[state]))

    def _learning_curves(self):
        """Loss and accuracy per epoch; a dotted line where a new training phase starts."""
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        phases = self.curves.get("phase", [])
        starts = [step for (step, phase), (_, before) in zip(phases[1:], phases) if phase != before]
        for ax, kind in zip(axes, ("loss", "accuracy")):
            for step in starts:
                ax.axvline(step + 0.5, color="grey", linestyle=":")
            for key in (kind, f"val_{kind}"):
                points = self.curves.get(key, [])
                if points:
                    steps, values = zip(*points)
                    ax.plot([s + 1 for s in steps], values, marker="o", label=key)
            ax.set_xlabel("epoch")
            ax.set_title(kind)
            ax.legend()
        fig.tight_layout()
        plt.close(fig)
        return fig
