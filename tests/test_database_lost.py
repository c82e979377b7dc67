"""The study database going away mid-search: a short outage is ridden out, a long one stops
the search cleanly. The real PostgreSQL at 127.0.0.1:5432, reached through a TCP proxy that
the test cuts (every connection dropped, new ones refused) and restores."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import sqlalchemy
import sqlalchemy.orm
from mlflow.tracking import MlflowClient

from conftest import REPO, TcpProxy, run_main
from imgsearch.storage.urls import default_storage_url
from imgsearch.storage.reconnect import is_connection_lost
from imgsearch import records

POSTGRES = ("127.0.0.1", 5432)


@pytest.fixture
def proxy():
    proxy = TcpProxy(POSTGRES)
    proxy.start()
    yield proxy
    proxy.cut()


def search_settings(runs_env: dict, proxy: TcpProxy, study: str, **settings: str) -> dict:
    return {**runs_env, "DATASET": "digits", "SPACE": "mlp", "PRUNER": "none", "STUDY": study,
            "STORAGE": f"postgresql://postgres@127.0.0.1:{proxy.port}/test", **settings}


def start_search(runs_env: dict, proxy: TcpProxy, study: str, log: Path, **settings: str) -> subprocess.Popen:
    env = {**os.environ, **search_settings(runs_env, proxy, study, **settings)}
    with log.open("w") as out:  # a file, not a pipe nobody reads while the search runs
        return subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env, stdout=out, stderr=out)


def wait_for_running_trial(storage, name: str, running: Callable[[], bool], output: Callable[[], str]) -> None:
    """Until study ``name`` has a running trial; a failure with ``output()`` should the search stop first."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and running():
        if name in optuna.get_all_study_names(storage):
            study = optuna.load_study(study_name=name, storage=storage)
            if study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                return
        time.sleep(0.2)
    pytest.fail(f"no trial ever ran: {output()[-2000:]}")


def test_every_error_a_cut_connection_raises_is_taken_for_a_lost_database(proxy):
    """The errors a session sees when its connection is cut mid-transaction: the statement that
    finds it cut, then any later one in the same transaction (PendingRollbackError, which
    Optuna's _get_trials can hit between its two reads; it once failed a trial in CI)."""
    engine = sqlalchemy.create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/test")
    seen = []
    with sqlalchemy.orm.Session(engine) as session:
        session.execute(sqlalchemy.text("SELECT 1"))  # a transaction begins on the proxied connection
        proxy.cut()
        for _ in range(2):
            with pytest.raises(sqlalchemy.exc.SQLAlchemyError) as raised:
                session.execute(sqlalchemy.text("SELECT 1"))
            seen.append(raised.value)
    engine.dispose()
    assert isinstance(seen[1], sqlalchemy.exc.PendingRollbackError)
    for exc in seen:
        wrapped = optuna.exceptions.StorageInternalError("commit failed")
        wrapped.__cause__ = exc  # as Optuna raises it
        assert is_connection_lost(exc) and is_connection_lost(wrapped), repr(exc)
    refused = optuna.exceptions.StorageInternalError("commit failed")
    refused.__cause__ = sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert not is_connection_lost(refused)  # a statement the database refused is not retried


def test_a_short_outage_is_ridden_out_and_the_search_completes(runs_env, proxy, pg, pg_study, capsys):
    import imgsearch

    storage, name = pg, pg_study
    settings = {**{key.lower(): value for key, value in search_settings(runs_env, proxy, name).items()},
                "trials": 2, "epochs": 5, "db_retry": 60}
    results: list = []
    # The Python API's search on a thread of this process: the process is not the point.
    search = threading.Thread(target=lambda: results.append(imgsearch.search(**settings)))
    search.start()
    wait_for_running_trial(storage, name, search.is_alive, lambda: capsys.readouterr().err)
    proxy.cut()
    time.sleep(5)
    proxy.start()
    search.join(timeout=300)
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert len(results) == 1, out[-3000:]
    assert f"storage: cannot reach the study database postgresql://postgres@127.0.0.1:{proxy.port}/test (" in out
    assert "storage: study database reachable again after" in out and "Traceback" not in out
    states = [t.state.name for t in optuna.load_study(study_name=name, storage=storage).trials]
    assert states.count("COMPLETE") == 2 and "RUNNING" not in states and "FAIL" not in states


def test_a_long_outage_stops_the_search_with_one_line_and_keeps_finished_trials(runs_env, proxy, pg, pg_study,
                                                                              tmp_path, capsys):
    storage, name = pg, pg_study
    log = tmp_path / "search.log"
    search = start_search(runs_env, proxy, name, log, TRIALS="20", EPOCHS="5", DB_RETRY="3")
    wait_for_running_trial(storage, name, lambda: search.poll() is None, log.read_text)
    time.sleep(3)  # a trial or two finish first
    complete = {t.number: t.value for t in optuna.load_study(study_name=name, storage=storage).trials
                if t.state.name == "COMPLETE"}
    proxy.cut()
    cut_at = time.monotonic()
    assert search.wait(timeout=120) == 2
    assert time.monotonic() - cut_at < 30  # 3 s of retries, then out, not hanging
    out = log.read_text()
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"error: study database postgresql://postgres@127.0.0.1:{proxy.port}/test unreachable "
                           "for 3 s (") and last.endswith("run the same command again to resume once it is back")
    assert "Traceback" not in out

    study = optuna.load_study(study_name=name, storage=storage)
    assert {t.number: t.value for t in study.trials if t.number in complete} == complete  # nothing lost
    left = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))  # the trial cut off, unless between trials
    assert len(left) <= 1
    client = MlflowClient(default_storage_url(Path(runs_env["RUNS_DIR"]) / "mlflow.db"))
    for trial in left:  # its MLflow run is ended (FINISHED when only the final tell was lost)
        assert client.get_run(trial.user_attrs[records.RUN_ID_ATTR]).info.status in ("FAILED", "FINISHED")

    proxy.start()  # the database is back: the same command resumes (here in this process), and the cut-off
    resumed = run_main(capsys, search_settings(runs_env, proxy, name, TRIALS=str(len(complete) + 1), EPOCHS="5",
                                               DB_RETRY="3", HEARTBEAT="1"))  # trial is retried
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    study = optuna.load_study(study_name=name, storage=storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    assert {t.number: t.value for t in study.trials if t.number in complete} == complete
    for trial in left:
        assert study.trials[trial.number].state.name == "FAIL"
        assert [t.system_attrs["failed_trial"] for t in study.trials if "failed_trial" in t.system_attrs] == [
            trial.number]
