"""Several worker processes on one study in the real PostgreSQL at 127.0.0.1:5432, and dead workers."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import optuna
import psutil
import pytest
import sqlalchemy.exc
from mlflow.tracking import MlflowClient

from conftest import POSTGRES_URL, REPO, run_main
from imgsearch.trials.stale_trials import STALE_NOT_NEEDED_REASON, STALE_REASON, RetryStaleTrial
from imgsearch.trials.trial_target import counts
from imgsearch.storage.compat import study_id, trial_id
from imgsearch.storage.errors import UserError
from imgsearch.storage.optuna_storage import open_storage
from imgsearch.storage.urls import default_storage_url
from imgsearch import records


def search_env(runs_env: dict, study: str, **settings: str) -> dict:
    return {**os.environ, **runs_env, "DATASET": "digits", "SPACE": "mlp", "PRUNER": "none",
            "STORAGE": POSTGRES_URL, "STUDY": study, **settings}


def children_by_trial(runs_dir: Path, study: optuna.Study) -> dict[int, list]:
    client = MlflowClient(default_storage_url(runs_dir / "mlflow.db"))
    experiment = client.get_experiment_by_name(study.study_name)
    parent = study.user_attrs["mlflow_parent_run_id"]
    runs = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    by_trial: dict[int, list] = {}
    for run in runs:
        by_trial.setdefault(int(run.data.tags["optuna.trial"]), []).append(run)
    return by_trial


def attempts(study: optuna.Study) -> list[int]:
    """Numbers of the trials that ran (a surplus trial is pruned before it starts, a retired copy
    never starts: neither has an MLflow run)."""
    return sorted(t.number for t in study.trials if records.SURPLUS_ATTR not in t.user_attrs
                  and not t.user_attrs.get(records.FAIL_REASON_ATTR, "").startswith("not needed"))


@pytest.mark.parametrize("target,queued", [(3, True), (2, False)], ids=["needed", "not-needed"])
def test_a_stale_trial_is_queued_again_only_while_the_study_needs_it(tmp_path, target, queued):
    """A dead worker's trial counts as running until it goes stale; once the finished and live
    running trials reach TRIALS without it, a copy queued then would stay WAITING for ever."""
    storage = optuna.storages.RDBStorage(default_storage_url(tmp_path / "optuna.db"),
                                         heartbeat_interval=1, grace_period=1)
    client = MlflowClient(default_storage_url(tmp_path / "mlflow.db"))
    storage.heartbeat_stale_trial_callback = RetryStaleTrial(client, target=target)
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # one finished trial
    experiment = client.create_experiment("s")
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    dead, live = study.ask(space), study.ask(space)
    run_id = client.create_run(experiment).info.run_id
    dead.set_user_attr(records.RUN_ID_ATTR, run_id)
    for trial in (dead, live):
        trial.set_user_attr(records.WORKER_ATTR, "host:1")
    storage.record_heartbeat(trial_id(dead))  # the live trial's worker records none here: never stale
    time.sleep(2.2)  # past the grace period
    optuna.storages.fail_stale_trials(study)

    by_number = {t.number: t for t in study.trials}
    assert by_number[dead.number].state.name == "FAIL" and by_number[live.number].state.name == "RUNNING"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    if queued:
        [copy] = waiting
        assert copy.system_attrs["failed_trial"] == dead.number and copy.params == dead.params
        assert run.data.tags[records.FAILURE_REASON_TAG] == STALE_REASON
    else:
        assert waiting == []
        assert run.data.tags[records.FAILURE_REASON_TAG] == STALE_NOT_NEEDED_REASON


def test_once_the_target_is_reached_a_waiting_copy_of_a_dead_trial_is_retired_and_the_portfolio_kept(tmp_path):
    from imgsearch.trials.stale_trials import retire_unneeded_retries

    storage = optuna.storages.RDBStorage(default_storage_url(tmp_path / "optuna.db"))
    study = optuna.create_study(storage=storage)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params={"x": 0.5},
                                              distributions=space, system_attrs={"failed_trial": 0}))
    study.enqueue_trial({"x": 0.25})  # the portfolio's: kept for a later, larger TRIALS
    retire_unneeded_retries(study, storage, target=1)
    copy, queued = study.trials[1:]
    assert copy.state.name == "FAIL"
    assert copy.user_attrs[records.FAIL_REASON_ATTR].startswith("not needed: the study reached TRIALS=1")
    assert queued.state.name == "WAITING"


@pytest.mark.parametrize("sent,code,line,reason", [
    (signal.SIGTERM, 143, "terminated (SIGTERM); run the same command again to resume the study", "Terminated"),
    (signal.SIGINT, 130, "interrupted; run the same command again to resume the study", "KeyboardInterrupt"),
], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_the_running_trial_and_exits_with_one_line(runs_env, tmp_path, capsys, sent, code, line,
                                                                   reason):
    settings = {**runs_env, "DATASET": "digits", "SPACE": "mlp", "TRIALS": "50", "EPOCHS": "20", "PRUNER": "none",
                "SEED": "0", "EXPLORE_IMAGES": "30"}  # sampled trials on a third of the images
    env = {**os.environ, **settings}
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err_file:  # a file, not a pipe nobody reads while the search runs
        search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env,
                                  stdout=subprocess.DEVNULL, stderr=err_file)
    db = Path(runs_env["RUNS_DIR"]) / "optuna.db"
    storage = default_storage_url(db)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if not db.exists():
            continue
        try:
            study = optuna.load_study(study_name="digits-mlp", storage=storage)
        except (KeyError, ValueError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
            # not created yet, or being created (its schema's version row written by both at once)
            continue
        running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
        if running and running[0].intermediate_values and running[0].user_attrs[records.FRACTION_ATTR] < 1:
            break  # mid-training (epochs are left to interrupt), on a fraction of the images
    search.send_signal(sent)
    assert search.wait(timeout=120) == code, stderr.read_text()[-3000:]
    err = stderr.read_text()
    assert err.strip().splitlines()[-1] == line
    assert "Traceback" not in err
    study = optuna.load_study(study_name="digits-mlp", storage=storage)
    assert not study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    closed = study.trials[-1]
    assert closed.state.name == "FAIL" and closed.user_attrs[records.FAIL_REASON_ATTR].startswith(reason)
    run = MlflowClient(default_storage_url(Path(runs_env["RUNS_DIR"]) / "mlflow.db")).get_run(
        closed.user_attrs[records.RUN_ID_ATTR])
    assert run.info.status == "FAILED"
    if sent == signal.SIGINT:  # interrupted, not judged: a resumed search runs it again, on the same images
        finished = sum(t.state.is_finished() and t.state.name != "FAIL" for t in study.trials)
        resumed = run_main(capsys, {**settings, "TRIALS": str(finished + 1)})  # in this process: resuming is the point
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        retry = [t for t in optuna.load_study(study_name="digits-mlp", storage=storage).trials
                 if t.user_attrs.get(records.RETRY_OF_ATTR) == closed.number]
        assert len(retry) == 1 and retry[0].state.name == "COMPLETE" and retry[0].params == closed.params
        assert retry[0].user_attrs[records.FRACTION_ATTR] == closed.user_attrs[records.FRACTION_ATTR] < 1


def test_three_workers_on_the_default_sqlite_have_no_lock_errors_and_one_killed_mid_trial_is_retried(runs_env):
    """Three worker processes on one SQLite file; one is killed (-9) in the middle of a trial: its
    trial is failed (no heartbeat) and queued again while the study needs it, the others finish
    the study, and the trials complete before the kill are kept."""
    env = {**os.environ, **runs_env, "DATASET": "digits", "SPACE": "mlp", "PRUNER": "none", "TRIALS": "6",
           "EPOCHS": "3", "WORKERS": "3", "HEARTBEAT": "1", "SEED": "0"}
    runs_dir = Path(runs_env["RUNS_DIR"])
    log = runs_dir.parent / "search.log"
    with log.open("w") as out_file:  # a file, not a pipe nobody reads while the search runs
        search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env,
                                  stdout=out_file, stderr=subprocess.STDOUT)
    storage = default_storage_url(runs_dir / "optuna.db")
    deadline, victim, reader, trials = time.monotonic() + 300, None, None, []
    while victim is None and time.monotonic() < deadline and search.poll() is None:
        time.sleep(0.2)
        try:  # read as the workers do, waiting out their locks (the test's own reads once met one)
            reader = reader or open_storage(storage)
            trials = optuna.load_study(study_name="digits-mlp", storage=reader).get_trials()
        except (KeyError, ValueError, UserError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError):
            continue  # not created yet
        if not any(t.state.name == "COMPLETE" for t in trials):
            continue  # kill only once a complete trial exists, to check it survives
        running = [t for t in trials if t.state.name == "RUNNING"
                   and "batch_size" in t.params and not t.intermediate_values]  # sampled, epochs still to go
        workers = {f"{socket.gethostname()}:{w.pid}": w for w in psutil.Process(search.pid).children()}
        if running and running[0].user_attrs[records.WORKER_ATTR] in workers:
            victim = workers[running[0].user_attrs[records.WORKER_ATTR]]  # the worker running that trial
    assert victim is not None, "no worker was ever mid-trial"
    complete_before = {t.number: t.value for t in trials if t.state.name == "COMPLETE"}
    victim.send_signal(signal.SIGKILL)
    assert search.wait(timeout=600) == 0, log.read_text()[-3000:]
    out = log.read_text()
    errors = [line for line in out.splitlines() if "locked" in line.lower() or "Error" in line]
    assert "locked" not in out.lower() and "Traceback" not in out, "\n".join(errors[-20:])
    assert "exited with -9; the other workers finished the study" in out

    study = optuna.load_study(study_name="digits-mlp", storage=storage)
    by_number = {t.number: t for t in study.trials}
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    assert sum(counts(t) for t in study.trials) == 6  # complete, or pruned (at chance, say), as TRIALS counts them
    assert all(by_number[n].state.name == "COMPLETE" and by_number[n].value == v for n, v in complete_before.items())
    # More than one ran trials at once (under load a worker may start after the others took them all).
    assert len({t.user_attrs[records.WORKER_ATTR] for t in study.trials}) >= 2
    [dead] = [t for t in study.trials if t.state.name == "FAIL" and "failed_trial" not in t.system_attrs]
    retried = [t for t in study.trials if "failed_trial" in t.system_attrs]
    runs = children_by_trial(runs_dir, study)
    assert sorted(runs) == attempts(study)  # one child run per attempt
    [dead_run] = runs[dead.number]
    assert dead_run.info.status == "FAILED"
    # Whether the dead trial is queued again depends on when it went stale (see
    # test_a_stale_trial_is_queued_again_only_while_the_study_needs_it):
    # before the others' trials reached TRIALS, its copy runs; after, no copy is left waiting.
    if retried:
        [copy] = retried
        assert copy.system_attrs["failed_trial"] == dead.number and copy.params == dead.params
        # it ran, or the others reached TRIALS first and it was retired (search/trials/stale_trials.py)
        assert copy.state.name == "COMPLETE" or copy.user_attrs[records.FAIL_REASON_ATTR].startswith("not needed")
        assert dead_run.data.tags[records.FAILURE_REASON_TAG] == STALE_REASON
    else:
        assert dead_run.data.tags[records.FAILURE_REASON_TAG] == STALE_NOT_NEEDED_REASON


def test_a_running_trial_left_without_heartbeats_does_not_stall_a_resumed_search(runs_env):
    """A RUNNING trial from a process that sent no heartbeats never goes stale; the search must not wait for it."""
    from imgsearch.command_line.main import main

    argv = ["--dataset", "digits", "--space", "mlp", "--pruner", "none", "--epochs", "1"]
    assert main([*argv, "--trials", "1"]) == 0
    storage = default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db")
    study = optuna.load_study(study_name="digits-mlp", storage=storage)
    zombie = study.ask()  # RUNNING forever: no worker, no heartbeat
    with sqlite3.connect(Path(runs_env["RUNS_DIR"]) / "optuna.db") as db:  # and left long ago
        db.execute("UPDATE trials SET datetime_start = datetime(datetime_start, '-1 hour') || '.000000' "
                   "WHERE number = ?", (zombie.number,))
    assert main([*argv, "--trials", "3"]) == 0
    states = [t.state.name for t in optuna.load_study(study_name="digits-mlp", storage=storage).trials]
    assert states.count("COMPLETE") == 3 and states.count("RUNNING") == 1


@pytest.mark.xdist_group("mlflow_server")
def test_two_workers_on_postgresql_reach_exactly_the_target_through_an_mlflow_server_and_hide_the_password(
        runs_env, pg, pg_study, mlflow_server):
    """Also: no password is ever on a command line (``ps`` shows those to every user), and a tracking
    URL with user:password@ works (MLflow's basic auth; this server ignores it)."""
    password, tracking_password = "s3cr3t-pw", "tr4ck-pw"
    env = search_env(runs_env, pg_study, TRIALS="6", EPOCHS="1", WORKERS="2",
                     MLFLOW_TRACKING_URI=mlflow_server.replace("//", f"//someone:{tracking_password}@"),
                     STORAGE=f"postgresql://postgres:{password}@127.0.0.1:5432/test",
                     CUDA_VISIBLE_DEVICES="3,5")  # no such GPUs: Keras runs on the CPU, the ids are still handed out
    search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    command_lines, workers_seen = set(), 0
    while search.poll() is None:  # every process's command line, as ps shows them, while the workers run
        lines = subprocess.run(["ps", "-eo", "ppid=,args="], capture_output=True, text=True).stdout.splitlines()
        command_lines.update(lines)
        ours = [line for line in lines if line.split(None, 1)[0] == str(search.pid)]  # this search's workers
        workers_seen = max(workers_seen, sum("-m imgsearch worker" in line for line in ours))
        time.sleep(0.2)
    out, err = search.communicate()
    assert search.returncode == 0, err[-3000:]
    assert workers_seen == 2
    assert not [line for line in command_lines if password in line or tracking_password in line]
    assert "postgresql://postgres:***@127.0.0.1:5432/test" in out and "evaluation:" in out
    assert password not in out + err and tracking_password not in out + err
    assert not (Path(runs_env["RUNS_DIR"]) / "mlflow.db").exists()  # everything went to the tracking server

    study = optuna.load_study(study_name=pg_study, storage=pg)
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and "WAITING" not in states
    assert states.count("COMPLETE") == 6  # exactly the target: a trial started past it is pruned as surplus
    assert all(records.SURPLUS_ATTR in t.user_attrs for t in study.trials if t.state.name == "PRUNED")
    attrs = [study.user_attrs, pg.get_study_system_attrs(study_id(study))] + [
        a for t in study.trials for a in (t.user_attrs, t.system_attrs)]
    assert password not in repr(attrs)

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(pg_study)
    runs = client.search_runs([experiment.experiment_id])
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == len(children) + 1  # one parent, shared by the two workers
    assert sorted(int(r.data.tags["optuna.trial"]) for r in children) == attempts(study)  # one child per attempt
    worker = records.WORKER_ATTR
    assert all(r.data.tags[worker] == study.trials[int(r.data.tags["optuna.trial"])].user_attrs[worker]
               for r in children)
    assert {r.data.tags["cuda_visible_devices"] for r in children} <= {"3", "5"}  # one GPU id per worker
    assert parent.info.status == "FINISHED" and "test_top1" in parent.data.metrics
    for run in runs:
        assert password not in repr((run.data.params, run.data.tags))
    exported = next(r for r in children if r.data.tags.get("best") == "true")
    assert "learning_curves.png" in [f.path for f in client.list_artifacts(exported.info.run_id)]
