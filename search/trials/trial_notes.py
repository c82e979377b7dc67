"""What the Optuna dashboard shows of a trial beyond its values: a note (optuna-dashboard's
``save_note``) saying how it ended with a link to its MLflow run, and its learning curves and
model summary as Optuna artifacts (``optuna.artifacts``), which the dashboard lists under the
trial when it is served with the same artifact store (``make dashboard`` is).

The artifact store is a folder (RUNS_DIR/optuna-artifacts) of the machine that ran the trial.
A note or an artifact that cannot be written is left out: it is never worth failing a trial.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import optuna

from imgsearch.records import OBJECTIVE


class TrialNotes:
    """Writes each finished trial's note and artifacts. ``mlflow_ui``: the MLflow UI's address
    the links point at (a tracking server's own, else where ``make mlflow`` serves it);
    ``artifacts``: the artifact store's folder (None: no artifacts)."""

    def __init__(self, mlflow_ui: str, experiment_id: str, artifacts: Path | None):
        self.mlflow_ui, self.experiment_id = mlflow_ui.rstrip("/"), experiment_id
        self.store = None
        if artifacts is not None:
            artifacts.mkdir(parents=True, exist_ok=True)
            self.store = optuna.artifacts.FileSystemArtifactStore(artifacts)

    def run_link(self, run_id: str) -> str:
        return f"{self.mlflow_ui}/#/experiments/{self.experiment_id}/runs/{run_id}"

    def write(self, trial: optuna.Trial, ended: str, run_id: str, summary: str | None, curves: dict) -> None:
        """The note ("**complete: val_accuracy 0.8125** after 3 epochs", the run's link) and the
        artifacts (``learning_curves.png`` from ``curves``, ``model_summary.txt``)."""
        from optuna_dashboard import save_note

        epochs = len(curves.get(OBJECTIVE, []))
        body = (f"**{ended}** after {epochs} epoch{'' if epochs == 1 else 's'}\n\n"
                f"[MLflow run of trial {trial.number}]({self.run_link(run_id)}): its params, epoch metrics and "
                "files (`make mlflow` serves the UI)\n")
        with contextlib.suppress(Exception):
            save_note(trial, body)
        if self.store is None:
            return
        with contextlib.suppress(Exception), tempfile.TemporaryDirectory() as folder:
            if summary:
                path = Path(folder) / "model_summary.txt"
                path.write_text(summary)
                optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(path),
                                                 study_or_trial=trial, mimetype="text/plain")
            if any(curves.values()):
                from imgsearch.figures import learning_curves

                path = Path(folder) / "learning_curves.png"
                learning_curves(curves).savefig(path)
                optuna.artifacts.upload_artifact(artifact_store=self.store, file_path=str(path),
                                                 study_or_trial=trial, mimetype="image/png")
