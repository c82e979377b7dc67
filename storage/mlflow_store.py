"""The default MLflow store in RUNS_DIR (``mlflow.db`` + ``mlartifacts/``), which keeps
working when RUNS_DIR is moved or copied.

MLflow records every artifact location as an absolute URI (``file:///old/runs/mlartifacts/
<study>/...``) on the experiment, each run, each logged model and each model version; it has
no relative form and no API to change one. So whoever opens the store (a search, a worker,
``make mlflow``, ``make report``) first points locations under another RUNS_DIR's
``mlartifacts`` at this one's, with plain SQL on those four columns.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from imgsearch.storage.layout import RunsLayout

# (table, column) holding an artifact URI, in MLflow 3's schema.
_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
              ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
              ("model_versions", "source"))


def local_tracking_uri(layout: RunsLayout) -> str:
    """The SQLite URI of ``layout``'s MLflow store, its artifact locations made to point into
    ``layout.mlflow_artifacts`` (``relocate_artifacts``)."""
    relocate_artifacts(layout.mlflow_db, layout.mlflow_artifacts)
    return f"sqlite:///{layout.mlflow_db.resolve()}"


def relocate_artifacts(mlflow_db: Path, artifacts: Path) -> list[str]:
    """Rewrite artifact URIs that point into another copy's ``mlartifacts`` folder so they point
    into ``artifacts``; return the old folders' URIs (none when nothing had moved)."""
    if not mlflow_db.is_file():
        return []
    new_root = artifacts.resolve().as_uri()
    with sqlite3.connect(mlflow_db, timeout=30) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return []
        old_roots = set()
        for name, location in db.execute("SELECT name, artifact_location FROM experiments"):
            suffix = "/" + (Path("/") / name).as_uri().removeprefix("file:///")
            root = (location or "").removesuffix(suffix)
            if location.startswith("file://") and root != location and root.endswith("/" + artifacts.name):
                old_roots.add(root)
        old_roots.discard(new_root)
        for old in sorted(old_roots):
            for table, column in _LOCATIONS:
                if table in tables:
                    db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                               f"WHERE substr({column}, 1, ?) = ?", (new_root, len(old) + 1, len(old) + 1, old + "/"))
    return sorted(old_roots)
