"""The runs folder: one place for the study database, MLflow's store, checkpoints and exports."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from storage.errors import UserError


@dataclass(frozen=True)
class RunsLayout:
    """Paths under ``root`` (``RUNS_DIR``, default ``./runs``).

    - ``optuna.db``: default SQLite study storage
    - ``mlflow.db`` + ``mlartifacts/``: default MLflow tracking store and its artifacts
    - ``checkpoints/<study>/``: the weights of the best trial so far, nothing else
    - ``exports/<study>/``: ``model.keras``, ``evaluation.json``, ``confusion_matrix.png``
    """

    root: Path

    @property
    def study_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    def checkpoints(self, study: str) -> Path:
        return self.root / "checkpoints" / study

    def exports(self, study: str) -> Path:
        return self.root / "exports" / study

    @contextmanager
    def setting_up(self) -> Iterator[None]:
        """Held (an exclusive lock on ``.setup.lock``) while a process creates or joins a study:
        two searches started at once on a new RUNS_DIR would otherwise both create MLflow's
        SQLite schema (its migrations are not safe across processes), the same experiment and
        parent run, and queue the starting trials twice."""
        with open(self.root / ".setup.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def ensure_writable(self) -> None:
        """Create ``root`` if needed; raise UserError when it cannot be written to."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create RUNS_DIR {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise UserError(f"RUNS_DIR {self.root} is not writable")
