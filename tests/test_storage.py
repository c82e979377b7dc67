"""Optuna storage on a real SQLite file and a real PostgreSQL server."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy

from imgsearch.storage.errors import UserError
from imgsearch.storage.layout import RunsLayout
from imgsearch.storage.mlflow_store import local_tracking_uri
from imgsearch.storage.optuna_storage import open_storage
from imgsearch.storage.urls import default_storage_url, mask_url

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def _roundtrip(url: str) -> None:
    name = f"t-{uuid.uuid4().hex[:8]}"
    study = optuna.create_study(study_name=name, storage=open_storage(url), direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    reloaded = optuna.load_study(study_name=name, storage=open_storage(url))
    assert len(reloaded.trials) == 3 and reloaded.best_value == study.best_value
    optuna.delete_study(study_name=name, storage=url)


def test_sqlite_file_storage(tmp_path):
    layout = RunsLayout(tmp_path / "runs")
    layout.ensure_writable()
    url = default_storage_url(layout.study_db)
    _roundtrip(url)
    assert layout.study_db.is_file()


def test_workers_creating_the_schema_at_the_same_moment_all_open_it(tmp_path):
    """Workers started together on a new database race to create Optuna's schema and its version
    rows; each must open it (one once failed with "UNIQUE constraint failed: alembic_version")."""
    for attempt in range(3):
        url = default_storage_url(tmp_path / f"new-{attempt}.db")
        start = threading.Barrier(6)
        failures: list[BaseException] = []

        def open_at_once():
            start.wait()
            try:
                open_storage(url)
            except BaseException as exc:  # noqa: BLE001 - collected and asserted on below
                failures.append(exc)

        threads = [threading.Thread(target=open_at_once) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not failures, failures


def test_postgresql_storage():
    try:
        sqlalchemy.create_engine(POSTGRES).connect().close()
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL must be running at 127.0.0.1:5432 (.ci/run starts it): {exc}")
    _roundtrip(POSTGRES)


def test_unreachable_postgresql_names_host_and_port_and_masks_password():
    with pytest.raises(UserError) as err:
        open_storage("postgresql://bob:s3cret@127.0.0.1:1/db")
    message = str(err.value)
    assert "127.0.0.1:1" in message and "s3cret" not in message and "***" in message
    assert "\n" not in message


def test_malformed_url():
    with pytest.raises(UserError, match="is not a database URL"):
        open_storage("not a url")


def test_mask_url():
    assert mask_url("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"


def test_runs_dir_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="cannot create RUNS_DIR"):
        RunsLayout(tmp_path / "file" / "runs").ensure_writable()


def test_a_moved_runs_dir_serves_its_mlflow_artifacts_from_where_it_is_now(tmp_path):
    """MLflow stores absolute artifact URIs; opening the store in a copied RUNS_DIR points them at the copy."""
    import shutil

    from mlflow.tracking import MlflowClient

    old = RunsLayout(tmp_path / "old")
    old.ensure_writable()
    client = MlflowClient(local_tracking_uri(old))
    experiment = client.create_experiment("s", artifact_location=(old.mlflow_artifacts / "s").resolve().as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.log_text(run_id, "hello", "note.txt")
    shutil.copytree(old.root, tmp_path / "new")
    shutil.rmtree(old.root)

    new = RunsLayout(tmp_path / "new")
    moved = MlflowClient(local_tracking_uri(new))
    assert moved.get_run(run_id).info.artifact_uri.startswith(new.mlflow_artifacts.resolve().as_uri() + "/s/")
    assert Path(moved.download_artifacts(run_id, "note.txt", str(tmp_path))).read_text() == "hello"
