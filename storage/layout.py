"""The runs folder: one place for the study database, MLflow's store, checkpoints and exports."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imgsearch.storage.errors import UserError
from imgsearch.storage.files import locked


@dataclass(frozen=True)
class RunsLayout:
    """Paths under ``root`` (``RUNS_DIR``, default ``./runs``).

    - ``optuna.db``: default SQLite study storage
    - ``mlflow.db`` + ``mlartifacts/``: default MLflow tracking store and its artifacts
    - ``checkpoints/<study>/``: the weights of the best trial so far, nothing else
    - ``exports/<study>/``: ``model.keras``, ``evaluation.json``, ``confusion_matrix.png``
    - ``report.html``: ``make report``'s page
    - ``.imgsearch-runs``: says that this project made the folder (``make clean`` deletes no other)
    """

    root: Path

    MARKER = ".imgsearch-runs"
    # What the project writes at the top of a runs folder (SQLite adds -journal, -wal and -shm
    # files beside a database while it writes).
    ENTRIES = ("optuna.db", "mlflow.db", "mlartifacts", "checkpoints", "exports", "report.html", ".setup.lock",
               MARKER)

    @property
    def study_db(self) -> Path:
        return self.root / "optuna.db"

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.root / "mlartifacts"

    @property
    def optuna_artifacts(self) -> Path:
        """The Optuna artifact store: each trial's learning curves and model summary (the dashboard shows them)."""
        return self.root / "optuna-artifacts"

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
        with locked(self.root / ".setup.lock"):
            yield

    @contextmanager
    def readable_copy(self) -> Iterator[RunsLayout]:
        """This layout, or, when its databases cannot be written (a RUNS_DIR copied read-only,
        say: SQLite and MLflow's store open them for writing), a copy of them in a temporary
        folder whose ``mlartifacts`` links to this one's."""
        databases = [db for db in (self.study_db, self.mlflow_db) if db.is_file()]
        if all(os.access(db, os.W_OK) for db in databases) and os.access(self.root, os.W_OK | os.X_OK):
            yield self
            return
        with tempfile.TemporaryDirectory(prefix="imgsearch-read-") as folder:
            copy = RunsLayout(Path(folder))
            for db in databases:
                shutil.copyfile(db, copy.root / db.name)
            if self.mlflow_artifacts.is_dir():
                copy.mlflow_artifacts.symlink_to(self.mlflow_artifacts.resolve(), target_is_directory=True)
            yield copy

    def check_folder(self) -> None:
        """UserError when ``root`` exists but is not a folder."""
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"RUNS_DIR {self.root} is a file, not a folder; set RUNS_DIR to a folder")

    def ensure_writable(self) -> None:
        """Create ``root`` if needed (marked as this project's); raise UserError when it cannot be written to."""
        self.check_folder()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create RUNS_DIR {self.root}: {exc.strerror}") from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise UserError(f"RUNS_DIR {self.root} is not writable")
        (self.root / self.MARKER).touch()

    def check_study_db(self) -> None:
        """For a command that only reads studies: UserError when the default study database is
        not there (nothing is created), or is empty (a database that lost its content: a new
        study in it would sit beside the old study's MLflow runs)."""
        self.check_folder()
        if not self.study_db.is_file():
            raise UserError(f"no study database at {self.study_db}; run a search first, or set RUNS_DIR or STORAGE")
        self.check_not_empty()

    def check_not_empty(self) -> None:
        """UserError when the default study database is there but holds nothing (0 bytes)."""
        if self.study_db.is_file() and self.study_db.stat().st_size == 0:
            raise UserError(f"{self.study_db} is empty (0 bytes): its studies are lost. Restore it from a backup, "
                            "or delete it (and mlflow.db, whose runs belong to those studies) to start afresh")

    def not_ours(self) -> str | None:
        """Why ``root`` is not a runs folder this project made (None when it is): ``make clean``
        deletes only such a folder, and only when it holds nothing else."""
        if not self.root.is_dir():
            return f"RUNS_DIR {self.root} is not a folder"
        names = [entry.name for entry in self.root.iterdir()]
        if not {self.MARKER, "optuna.db", "mlflow.db"} & set(names):
            return (f"RUNS_DIR {self.root} is not a runs folder of this project "
                    f"(no {self.MARKER}, optuna.db or mlflow.db)")
        base = [re.sub(r"-(journal|wal|shm)$", "", name) for name in names]
        others = sorted(name for name, b in zip(names, base) if b not in self.ENTRIES and ".tmp." not in name)
        if others:
            return (f"RUNS_DIR {self.root} holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}, "
                    "which this project did not write")
        return None
