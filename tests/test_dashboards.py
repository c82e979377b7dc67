"""`make dashboard` and `make mlflow`: they listen on 127.0.0.1 only, and a password in the
database URL shows neither in their output nor in any process's command line."""

from __future__ import annotations

import uuid

import optuna
import psutil
import pytest

from conftest import free_port, serving

PASSWORD = "s3cr3t-pw"


def serve(target: str, port: int, env: dict, tmp_path) -> tuple[str, list[str], set]:
    """Run ``make <target>`` until it answers on ``port``; its output, the command lines of its
    processes, and the addresses they listen on."""
    log_path = tmp_path / f"{target}.log"
    with serving(target, port, env, log_path) as make:
        processes = [psutil.Process(make.pid), *psutil.Process(make.pid).children(recursive=True)]
        commands = [" ".join(p.cmdline()) for p in processes]
        listening = {c.laddr for p in processes for c in p.net_connections() if c.status == psutil.CONN_LISTEN}
    return log_path.read_text(), commands, listening


def test_the_optuna_dashboard_binds_to_localhost_and_hides_the_password(runs_env, tmp_path, pg, pg_study):
    optuna.create_study(study_name=pg_study, storage=pg)
    port = free_port()
    out, commands, listening = serve("dashboard", port, {
        "STORAGE": f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test", "DASHBOARD_PORT": str(port)}, tmp_path)
    assert f"optuna-dashboard on postgresql://postgres:***@127.0.0.1:5432/test: http://127.0.0.1:{port}" in out
    assert PASSWORD not in out and not [c for c in commands if PASSWORD in c]
    assert {(addr.ip, addr.port) for addr in listening} == {("127.0.0.1", port)}


@pytest.fixture
def mlflow_database():
    """A fresh PostgreSQL database for MLflow's tables (they cannot share one with Optuna's:
    both keep their schema version in an ``alembic_version`` table)."""
    import sqlalchemy

    name = f"mlflow_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine("postgresql://postgres@127.0.0.1:5432/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    yield name
    with admin.connect() as connection:
        connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def test_the_mlflow_ui_binds_to_localhost_and_hides_the_password(runs_env, tmp_path, mlflow_database):
    port = free_port()
    store = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/{mlflow_database}"
    out, commands, listening = serve("mlflow", port, {"MLFLOW_TRACKING_URI": store, "MLFLOW_PORT": str(port)},
                                     tmp_path)
    assert f"MLflow UI on postgresql://postgres:***@127.0.0.1:5432/{mlflow_database}: http://127.0.0.1:{port}" in out
    assert PASSWORD not in out and not [c for c in commands if PASSWORD in c]
    assert {addr.ip for addr in listening} == {"127.0.0.1"} and port in {addr.port for addr in listening}


@pytest.mark.parametrize("command, setting, ready", [("dashboard", "DASHBOARD_PORT", "optuna-dashboard on"),
                                                     ("mlflow", "MLFLOW_PORT", "MLflow UI on")])
def test_the_dashboards_start_without_tensorflow(runs_env, tmp_path, command, setting, ready):
    """What the command imports (``-X importtime``, which its MLflow server child does not
    inherit), up to the line that says where it serves: neither TensorFlow nor Keras."""
    import os
    import subprocess
    import sys
    import time

    port = free_port()
    log = tmp_path / "imports.log"
    with log.open("w") as err:
        server = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "imgsearch", command],
                                  env={**os.environ, **runs_env, setting: str(port)}, stdout=subprocess.PIPE,
                                  stderr=err, text=True)
    try:
        line = server.stdout.readline()
        assert ready in line, log.read_text()[-2000:]
        time.sleep(0.5)  # any import the serving loop would do
    finally:
        server.terminate()
        server.wait(timeout=60)
    imported = {entry.split("|")[-1].strip().split(".")[0] for entry in log.read_text().splitlines()
                if entry.startswith("import time:")}
    assert "imgsearch" in imported  # the log was read
    assert not imported & {"tensorflow", "keras", "autokeras", "keras_tuner"}
