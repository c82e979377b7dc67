"""The default MLflow store in RUNS_DIR (``mlflow.db`` + ``mlartifacts/``), which keeps
working when RUNS_DIR is moved or copied.

MLflow records every artifact location as an absolute URI (``file:///old/runs/mlartifacts/
<study>/...``) on the experiment, each run, each logged model and each model version; it has
no relative form and no API to change one. So whoever opens the store (a search, a worker,
``make mlflow``, ``make report``) first points locations under another RUNS_DIR's
``mlartifacts`` at this one's, with plain SQL on those four columns.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

from imgsearch.storage.files import temp_path
from imgsearch.storage.layout import RunsLayout

# (table, column) holding an artifact URI, in MLflow 3's schema.
_LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
              ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
              ("model_versions", "source"))


def local_tracking_uri(layout: RunsLayout) -> str:
    """The SQLite URI of ``layout``'s MLflow store, its artifact locations made to point into
    ``layout.mlflow_artifacts`` (``relocate_artifacts``); a new store starts as a copy of an
    empty one (``seed_store``)."""
    if layout.root.is_dir() and not layout.mlflow_db.exists():
        seed_store(layout.mlflow_db)
    relocate_artifacts(layout.mlflow_db, layout.mlflow_artifacts)
    return f"sqlite:///{layout.mlflow_db.resolve()}"


def seed_store(mlflow_db: Path) -> None:
    """Create ``mlflow_db`` as a copy of an empty store MLflow made (``empty_store``), unless
    another process created it first. Nothing when there is no such copy: MLflow makes the store.

    Why: MLflow makes a new SQLite store by running its schema migrations one by one, 1-2 s
    of every search on a new RUNS_DIR (measured 2.1 s in a fresh process, 0.9 s after); a copy
    of a store it made, at the schema's head, opens in 0.03 s and migrates nothing.
    """
    template = empty_store()
    if template is None:
        return
    tmp = temp_path(mlflow_db)
    try:
        shutil.copyfile(template, tmp)
        os.link(tmp, mlflow_db)  # fails if another process's store is there: that one stays
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def empty_store() -> Path | None:
    """An empty MLflow store as this MLflow version makes it, kept in the user's cache folder
    (``$XDG_CACHE_HOME`` or ``~/.cache``, ``imgsearch/mlflow-<version>.db``) and made on first
    use; None when it cannot be made there."""
    import mlflow
    from mlflow.tracking import MlflowClient

    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "imgsearch"
    path = folder / f"mlflow-{mlflow.__version__}.db"
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path)
        try:
            MlflowClient(f"sqlite:///{tmp}").search_experiments()
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    except Exception:  # an unwritable cache folder, say: MLflow makes each store itself
        return None
    return path


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
