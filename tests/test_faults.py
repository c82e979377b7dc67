"""Faults and hostile input, round two, each through the command line or the Makefile as a user
meets it: a lost tracking server, exports interrupted or crowded or on a full disk, dashboards
on the network or on a used port, `make clean` on the wrong folder, orphaned workers, memory,
and the one-line errors for damaged or mistaken inputs. Each ends with one ``error:`` line
and exit 2, or works, with nothing lost or left behind."""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import psutil
import pytest
from mlflow.entities import LoggedModelStatus
from mlflow.tracking import MlflowClient

from conftest import REPO, TcpProxy, free_port, run_cli, run_main, serving
from imgsearch import records
from imgsearch.storage.files import HOST
from imgsearch.storage.urls import default_storage_url
from test_inputs import fill, small_disk

DIGITS = {"DATASET": "digits", "SPACE": "mlp", "PRUNER": "none"}


def one_error(result: subprocess.CompletedProcess) -> str:
    """The one ``error:`` line of a command that stopped with exit status 2: its last line, and
    no traceback (TensorFlow's start-up lines may come before it)."""
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-3000:])
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("make")]
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == lines[-1:] and "Traceback" not in result.stderr, result.stderr[-3000:]
    return errors[0]


def study_of(runs: Path, name: str = "digits-mlp") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=default_storage_url(runs / "optuna.db"))


def runs_of(tracking_uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri)
    return client.search_runs([client.get_experiment_by_name(study).experiment_id])


def pending_models(tracking_uri: str, study: str) -> list:
    client = MlflowClient(tracking_uri)
    return [m for m in client.search_logged_models([client.get_experiment_by_name(study).experiment_id])
            if m.status != LoggedModelStatus.READY and m.status != LoggedModelStatus.FAILED]


# --- a lost MLflow tracking server ----------------------------------------------------------------

@pytest.mark.xdist_group("mlflow_server")
def test_a_tracking_server_that_goes_away_mid_epoch_stops_the_search_in_bounded_time_and_a_rerun_repairs(
        runs_env, tmp_path, mlflow_server, capsys):
    proxy = TcpProxy(("127.0.0.1", int(mlflow_server.rsplit(":", 1)[1])))
    proxy.start()
    settings = {**runs_env, **DIGITS, "EPOCHS": "30", "TRIALS": "2", "SEED": "0",
                "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{proxy.port}"}
    env = {**os.environ, **settings}
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=err)
    client, deadline = MlflowClient(mlflow_server), time.monotonic() + 180
    while time.monotonic() < deadline and search.poll() is None:  # until the first trial has logged 2 epochs
        experiment = client.get_experiment_by_name("digits-mlp")
        runs = (client.search_runs([experiment.experiment_id], "attributes.run_name LIKE 'trial-%'")
                if experiment else [])
        if runs and len(client.get_metric_history(runs[0].info.run_id, "val_accuracy")) >= 2:
            break
        time.sleep(0.2)
    proxy.cut()
    cut = time.monotonic()
    code = search.wait(timeout=300)
    assert time.monotonic() - cut < 60  # MLflow's retries bounded: about 15 s when connections are refused
    lines = err_path.read_text().strip().splitlines()
    assert code == 2 and lines[-1].startswith(
        f"error: MLflow tracking store http://127.0.0.1:{proxy.port} stopped answering"), lines[-5:]
    assert "Traceback" not in err_path.read_text()
    runs_dir = Path(runs_env["RUNS_DIR"])
    [interrupted] = study_of(runs_dir).trials
    assert interrupted.state.name == "FAIL" and interrupted.user_attrs[records.INTERRUPTED_ATTR]
    assert client.get_run(interrupted.user_attrs[records.RUN_ID_ATTR]).info.status == "RUNNING"  # left for the re-run

    proxy.start()
    again = run_main(capsys, {**settings, "TRIALS": "1"})  # in this process: the process boundary is not the point
    assert again.returncode == 0, again.stderr[-3000:]
    assert "queued again: trials 0, which were interrupted" in again.stdout
    study = study_of(runs_dir)
    retry = study.trials[1]
    assert retry.state.name == "COMPLETE" and retry.user_attrs[records.RETRY_OF_ATTR] == 0
    assert retry.params == interrupted.params  # the portfolio trial, run after all
    repaired = client.get_run(interrupted.user_attrs[records.RUN_ID_ATTR])
    assert repaired.info.status == "FAILED" and "stopped answering" in repaired.data.tags["failure_reason"]
    assert not [r for r in runs_of(mlflow_server, "digits-mlp") if r.info.status == "RUNNING"]
    proxy.cut()


# --- exports -------------------------------------------------------------------------------------

def scratch_of(runs: Path, pid: int | str = "*") -> list[Path]:
    return list((runs / "exports" / "digits-mlp").glob(f".{HOST}.{pid}.tmp.scratch"))


def export_until_scratch(env: dict, runs: Path) -> subprocess.Popen:
    """A `python -m imgsearch export` that has reached MLflow's part of the export (its scratch folder is there)."""
    export = subprocess.Popen([sys.executable, "-m", "imgsearch", "export"], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not scratch_of(runs, export.pid) and export.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert scratch_of(runs, export.pid), export.communicate()
    return export


def test_an_export_killed_interrupted_or_run_twice_at_once_leaves_no_run_running_and_nothing_half_done(runs_env, capsys):
    runs = Path(runs_env["RUNS_DIR"])
    env = {**os.environ, **runs_env, **DIGITS, "TRIALS": "1", "EPOCHS": "1"}
    assert run_main(capsys, {**runs_env, **DIGITS, "TRIALS": "1", "EPOCHS": "1"}).returncode == 0
    tracking = default_storage_url(runs / "mlflow.db")
    exported = study_of(runs).trials[0].user_attrs[records.RUN_ID_ATTR]

    killed = export_until_scratch(env, runs)
    killed.send_signal(signal.SIGKILL)
    killed.wait()

    # Two at once; the first is interrupted (Ctrl-C) in MLflow's part: it finishes, then stops.
    other = subprocess.Popen([sys.executable, "-m", "imgsearch", "export"], cwd=REPO, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    interrupted = export_until_scratch(env, runs)
    interrupted.send_signal(signal.SIGINT)
    out, err = interrupted.communicate(timeout=120)
    assert interrupted.returncode == 130 and err.strip().splitlines()[-1] == "interrupted", err[-3000:]
    assert "Traceback" not in err and "SystemError" not in err
    out, err = other.communicate(timeout=300)
    assert other.returncode == 0, err[-3000:]
    assert MlflowClient(tracking).get_run(exported).info.status == "FINISHED"
    assert not [r for r in runs_of(tracking, "digits-mlp") if r.info.status == "RUNNING"]
    assert pending_models(tracking, "digits-mlp") == []  # the killed export's model was marked FAILED
    assert scratch_of(runs) == []  # and its scratch folder removed
    versions = MlflowClient(tracking).search_model_versions("name = 'digits-mlp'")
    assert len(versions) >= 3  # the search's, the interrupted one's, the other one's


def test_a_runs_dir_that_fills_during_mlflows_part_of_the_export_is_one_line_and_leaves_nothing_half_written(
        runs_env, tmp_path, monkeypatch, capsys):
    from imgsearch.command_line.main import main
    from imgsearch.results import registry

    log_model = registry.log_model

    def on_a_disk_that_fills(*args, **kwargs):  # our files are written: MLflow's copies meet a full disk
        fill(disk)
        return log_model(*args, **kwargs)

    with small_disk(tmp_path / "disk") as disk:
        runs = disk / "runs"
        monkeypatch.setenv("RUNS_DIR", str(runs))
        assert main(["search", "--dataset", "digits", "--space", "mlp", "--trials", "1", "--epochs", "1"]) == 0
        monkeypatch.setattr(registry, "log_model", on_a_disk_that_fills)
        capsys.readouterr()
        assert main(["export", "--study", "digits-mlp"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: disk full: ") and "\n" not in err and "free some space" in err
        (disk / "filler").unlink()
        tracking = default_storage_url(runs / "mlflow.db")
        assert not [r for r in runs_of(tracking, "digits-mlp") if r.info.status == "RUNNING"]
        assert pending_models(tracking, "digits-mlp") == []
        assert [p for p in runs.rglob("*") if ".tmp." in p.name] == []
        logged = list((runs / "mlartifacts").rglob("model.keras"))
        assert len(logged) == 1  # the search's export; the failed one left no half-written copy
        monkeypatch.setattr(registry, "log_model", log_model)
        assert main(["export", "--study", "digits-mlp"]) == 0


# --- dashboards ----------------------------------------------------------------------------------

def _request(url: str, method: str = "GET", headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers or {}), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_the_dashboard_opened_to_the_network_is_read_only_and_says_so(runs_env, tmp_path):
    runs = Path(runs_env["RUNS_DIR"])
    runs.mkdir()
    optuna.create_study(study_name="kept", storage=default_storage_url(runs / "optuna.db"))
    port = free_port()
    log = tmp_path / "dashboard.log"
    with serving("dashboard", port, {**runs_env, "HOST": "0.0.0.0", "DASHBOARD_PORT": str(port)}, log):
        base = f"http://127.0.0.1:{port}"
        assert _request(f"{base}/api/studies") == 200
        assert _request(f"{base}/api/studies/1", "DELETE") == 403
        assert _request(f"{base}/api/studies/1/note", "PUT") == 403
    assert optuna.get_all_study_names(default_storage_url(runs / "optuna.db")) == ["kept"]
    assert "warning: HOST=0.0.0.0 serves the dashboard to the network, read-only" in log.read_text()


def test_mlflows_allowed_hosts_follow_host(runs_env, tmp_path):
    port = free_port()
    log = tmp_path / "mlflow.log"
    with serving("mlflow", port, {**runs_env, "HOST": "0.0.0.0", "MLFLOW_PORT": str(port)}, log, ready="MLflow UI"):
        url = f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search?max_results=10"
        assert _request(url, headers={"Host": f"imgsearch-host.example:{port}"}) == 200  # another machine's name
    assert "warning: HOST=0.0.0.0 serves the MLflow UI to the network" in log.read_text()


@pytest.mark.parametrize("command, setting", [("dashboard", "DASHBOARD_PORT"), ("mlflow", "MLFLOW_PORT")])
def test_a_port_in_use_is_one_line(runs_env, command, setting):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        line = one_error(run_cli({**runs_env, setting: str(port)}, command))
    assert line.startswith(f"error: cannot listen on 127.0.0.1:{port} (Address already in use)") and setting in line


# --- make clean ----------------------------------------------------------------------------------

def test_make_clean_deletes_only_a_runs_folder_this_project_made(tmp_path):
    def clean(folder: Path) -> subprocess.CompletedProcess:
        return subprocess.run(["make", "--no-print-directory", "clean", f"RUNS_DIR={folder}"], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    home = tmp_path / "home"
    (home / "photos").mkdir(parents=True)
    assert "is not a runs folder of this project" in one_error(clean(home))
    runs = tmp_path / "runs"
    (runs / "exports").mkdir(parents=True)
    (runs / ".imgsearch-runs").touch()
    (runs / "optuna.db").touch()
    (runs / "notes.txt").write_text("mine")
    assert "holds notes.txt, which this project did not write" in one_error(clean(runs))
    assert (home / "photos").is_dir() and (runs / "notes.txt").is_file()
    (runs / "notes.txt").unlink()
    assert clean(runs).returncode == 0 and not runs.exists()


# --- processes and memory ------------------------------------------------------------------------

def test_workers_end_with_their_parent_killed_9(runs_env):
    env = {**os.environ, **runs_env, **DIGITS, "TRIALS": "40", "EPOCHS": "30", "WORKERS": "2"}
    search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    runs, deadline = Path(runs_env["RUNS_DIR"]), time.monotonic() + 180
    workers = []
    while time.monotonic() < deadline and search.poll() is None:
        workers = psutil.Process(search.pid).children()
        if len(workers) == 2 and (runs / "optuna.db").exists():
            running = study_of(runs).get_trials(states=(optuna.trial.TrialState.RUNNING,))
            if len(running) == 2:
                break
        time.sleep(0.2)
    assert len(workers) == 2
    search.send_signal(signal.SIGKILL)
    search.wait()
    # Each gets SIGTERM from the kernel and closes its trial (in 2.4 s alone). Once, in CI, two
    # were still alive after 60 s (not reproduced): a wider margin, and a failure says where
    # each survivor waits.
    gone, alive = psutil.wait_procs(workers, timeout=150)
    assert alive == [], [_threads_of(p) for p in alive]
    states = [t.state.name for t in study_of(runs).trials]
    assert "RUNNING" not in states


def _threads_of(process: psutil.Process) -> str:
    """Where a process that should have ended waits: each thread's kernel wait channel, and the
    process killed so that it does not outlive the test."""
    try:
        waits = sorted(Path(f"/proc/{process.pid}/task/{t.id}/wchan").read_text() for t in process.threads())
        described = f"{process.pid} {process.cmdline()[-1:]} waits in {waits}"
        process.kill()
    except (psutil.Error, OSError) as exc:
        return f"{process.pid}: {exc}"
    return described


def test_a_trial_too_large_for_memory_is_pruned_before_it_allocates(runs_env, capsys):
    result = run_main(capsys, {**runs_env, "DATASET": "digits", "SPACE": "cnn", "IMAGE_SIZE": "512", "TRIALS": "1"})
    assert one_error(result) == ("error: no trial completed of 1 trials (the trial lines above say why); "
                                 "run the same command to resume the study")
    assert "pruned: too large for memory: training would take about" in result.stdout


def test_a_dataset_too_large_for_memory_is_refused_before_it_is_decoded(runs_env, tmp_path, capsys):
    from conftest import _require_shared

    hundred = _require_shared("datasets/tiny-imagenet-100.zip")
    data = Path(runs_env["DATA_DIR"])
    data.mkdir()
    (data / "tiny-imagenet-200.zip").symlink_to(hundred)
    started = time.monotonic()
    line = one_error(run_main(capsys, {**runs_env, "DATASET": "tinyimagenet", "IMAGE_SIZE": "512"}))
    assert line.startswith("error: IMAGE_SIZE=512: the 55,000 images would take 40.3 GiB of memory") \
        and "; set IMAGE_SIZE=" in line
    assert time.monotonic() - started < 60  # said before decoding (it takes minutes)


# --- full disks ----------------------------------------------------------------------------------

def test_a_full_disk_while_the_dataset_cache_is_written_is_one_line(runs_env, tmp_path, capsys):
    with small_disk(tmp_path / "disk", size="1m") as disk:
        fill(disk, leave=4096)
        line = one_error(run_main(capsys, {**runs_env, **DIGITS, "DATA_DIR": str(disk / "data")}))
        assert line.startswith(f"error: disk full: cannot write {disk / 'data' / 'cache'}")


def test_a_full_disk_during_the_download_says_so_not_offline(runs_env, tmp_path, capsys):
    payload = os.urandom(2 << 20)

    class Archive(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Archive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with small_disk(tmp_path / "disk", size="1m") as disk:
            line = one_error(run_main(capsys, {**runs_env, "DATASET": "tinyimagenet", "DATA_DIR": str(disk / "data"),
                                               "TINYIMAGENET_URL": f"http://127.0.0.1:{server.server_port}/t.zip"}))
            assert line.startswith(f"error: disk full: cannot write {disk / 'data' / 'tiny-imagenet-200.zip'}")
            assert list((disk / "data").iterdir()) == []  # no partial download left
    finally:
        server.shutdown()


# --- one line where a traceback was --------------------------------------------------------------

def test_damaged_or_mistaken_places_are_one_line_each_before_tensorflow(runs_env, tmp_path):
    """All in one process, which never imports TensorFlow: each is found before it would be."""
    runs, data = Path(runs_env["RUNS_DIR"]), Path(runs_env["DATA_DIR"])
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "optuna.db").write_bytes(b"this is not a database" * 100)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "optuna.db").touch()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    cases = [
        (["--runs-dir", str(garbage)], f"error: cannot open study storage sqlite:///{garbage / 'optuna.db'} "),
        (["--runs-dir", str(empty)], f"error: {empty / 'optuna.db'} is empty (0 bytes): its studies are lost."),
        (["--runs-dir", str(a_file)], f"error: RUNS_DIR {a_file} is a file, not a folder"),
        (["--data-dir", str(a_file)], f"error: DATA_DIR {a_file} is a file, not a folder"),
        (["--dataset", "folder", "--folder", str(tmp_path / "nowhere")], f"error: FOLDER {tmp_path / 'nowhere'}: "
         "no such folder"),
        (["--space", "finetune", "--backbones", "resnet9"], "error: unknown backbone 'resnet9' in BACKBONES"),
        (["--storage", "postgresql://postgres@127.0.0.1:1/test"], "error: cannot open study storage "
         "postgresql://postgres@127.0.0.1:1/test (127.0.0.1:1): "),
        (["--budget", "inf"], "error: BUDGET=inf: must be a finite number"),
        (["export"], f"error: no study database at {runs / 'optuna.db'}; run a search first"),  # a mistyped RUNS_DIR
        (["evaluate"], f"error: no study database at {runs / 'optuna.db'}; run a search first"),
        (["report"], f"error: no study database at {runs / 'optuna.db'}; run a search first"),
    ]
    script = ("import json, sys\nfrom imgsearch.command_line.main import main\n"
              f"for args in json.loads({json.dumps(json.dumps([c for c, _ in cases]))}):\n"
              "    command = args if args[0] in ('export', 'evaluate', 'report') else ['search', *args]\n"
              "    assert main([*command, '--dataset', 'digits']) == 2, args\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'jax', 'torch'}))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env={**os.environ, **runs_env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == len(cases), "\n".join(lines)
    for line, (args, expected) in zip(lines, cases):
        assert line.startswith(expected), (args, line)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert not (runs / "optuna.db").exists() and not data.exists()  # no study database was made
    assert (garbage / "optuna.db").read_bytes() == b"this is not a database" * 100  # left as it was


def test_misspelt_settings_are_named(runs_env):
    result = run_cli({**runs_env, "DATASET": "digits", "BUGDET": "30", "TRAILS": "2", "PORT": "1", "SEED": "-5"})
    assert result.stderr.splitlines()[:2] == [
        "warning: BUGDET is not a setting (did you mean BUDGET?); it is ignored",
        "warning: TRAILS is not a setting (did you mean TRIALS?); it is ignored"]
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 3


def test_reports_to_a_folder_and_from_a_read_only_runs_dir(runs_env, tmp_path, capsys):
    runs = Path(runs_env["RUNS_DIR"])
    assert run_main(capsys, {**runs_env, **DIGITS, "TRIALS": "1", "EPOCHS": "1"}).returncode == 0
    assert one_error(run_cli({**runs_env, "REPORT": str(tmp_path)}, "report")).startswith(
        f"error: REPORT {tmp_path} is a folder; give the HTML file to write")
    out = tmp_path / "elsewhere" / "report.html"
    before = {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()}
    # A read-only view of the runs folder, as a copy on a read-only medium would be.
    command = ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"',
               str(runs), sys.executable, "-m", "imgsearch", "report"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **runs_env, "REPORT": str(out)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    page = out.read_text()
    assert "digits-mlp" in page and "data:image/png;base64" in page
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("*") if p.is_file()} == before


def test_a_read_only_data_dir_without_its_cache_is_one_line(runs_env, tmp_path):
    data = tmp_path / "readonly-data"
    data.mkdir()
    command = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(data),
               sys.executable, "-m", "imgsearch"]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, **runs_env, **DIGITS, "DATA_DIR": str(data)},
                          capture_output=True, text=True, timeout=120)
    assert one_error(done) == (f"error: DATA_DIR {data} is not writable: the prepared dataset is cached in "
                               f"{data / 'cache'}; set DATA_DIR to a folder you can write")
