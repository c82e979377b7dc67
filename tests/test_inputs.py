"""Hostile input and faults: every bad value, a full disk, a damaged weights file, killed
processes, two searches at once, MySQL. Each ends with one ``error:`` line and exit 2, or
works, with no study damaged and nothing left behind."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import optuna
import psutil
import pytest

from conftest import REPO
from imgsearch.command_line.main import main
from imgsearch.trials.study import get_space
from imgsearch.storage.urls import default_storage_url
from imgsearch.storage.files import HOST
from conftest import run_cli

BAD_VALUES = [
    ({"SEED": "-5"}, "SEED=-5: must be from 0 to 4294967295"),
    ({"IMAGE_SIZE": "100000"}, "IMAGE_SIZE=100000: must be from 8 to 512"),
    ({"TRIALS": "0"}, "TRIALS=0: must be at least 1"),
    ({"BUDGET": "-1"}, "BUDGET=-1: must be more than 0"),
    ({"MAX_BLOCKS": "0"}, "MAX_BLOCKS=0: must be from 1 to 8"),
    ({"EPOCHS": "two"}, "EPOCHS='two' is not a valid int"),
    ({"SAMPLER": "grid"}, "unknown SAMPLER 'grid'; choose one of: tpe, random, cmaes, gp"),
    ({"STUDY": "../../escaped"}, "STUDY='../../escaped': use up to 100 letters"),
    ({"STUDY": "a/b"}, "STUDY='a/b': use up to 100 letters"),
    ({"STUDY": "x" * 300}, "STUDY='xxxxx"),
    ({"STORAGE": "mysql+mysqldb://root@127.0.0.1:3306/test"},
     "STORAGE mysql+mysqldb://root@127.0.0.1:3306/test: the driver MySQLdb is not installed; install mysqlclient"),
    ({"MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}, "MLFLOW_TRACKING_URI http://127.0.0.1:1: no MLflow server answers"),
    ({"MLFLOW_TRACKING_URI": "file:///somewhere"}, "MLFLOW_TRACKING_URI=file:///somewhere: MLflow 3 no longer takes"),
    ({"BUDGET": "inf"}, "BUDGET=inf: must be a finite number"),
    ({"MAX_EPOCH_SECONDS": "nan"}, "MAX_EPOCH_SECONDS=nan: must be a finite number"),
    ({"DB_RETRY": "nan"}, "DB_RETRY=nan: must be a finite number"),
    ({"WORKERS": "1000"}, "WORKERS=1000: this machine can run at most "),
    ({"MLFLOW_TRACKING_URI": "http://someone:pw@127.0.0.1:1"},
     "MLFLOW_TRACKING_URI http://someone:***@127.0.0.1:1: no MLflow server answers there (["),
]


@pytest.mark.parametrize("bad, message", BAD_VALUES, ids=lambda v: str(v)[:40])
def test_a_bad_value_is_one_line_and_exit_2_before_anything_is_created(runs_env, tmp_path, bad, message):
    result = run_cli({**runs_env, "DATASET": "digits", **bad})
    assert result.returncode == 2
    assert result.stderr.splitlines() == [result.stderr.strip()] and result.stderr.startswith(f"error: {message}")
    assert not Path(runs_env["RUNS_DIR"]).exists() and not (tmp_path.parent / "escaped").exists()


def test_the_checks_import_neither_tensorflow_nor_mlflow():
    """What makes a bad value answer in well under 2 s, with no TensorFlow start-up lines."""
    script = ("import sys; from imgsearch.command_line.main import main\n"
              "for args in (['--seed', '-5'], ['--study', 'a/b'], ['--mlflow-tracking-uri', 'file:///x']):\n"
              "    assert main(['search', '--dataset', 'digits', *args]) == 2\n"
              "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'mlflow', 'jax'}))")
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    assert len(result.stderr.strip().splitlines()) == 3


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_two_searches_started_at_once_on_a_new_runs_dir_both_finish(runs_env):
    """Also: the temporary files a killed process left (a half-written cache, a half-saved
    checkpoint) are removed; those of a live process are not."""
    runs, data = Path(runs_env["RUNS_DIR"]), Path(runs_env["DATA_DIR"])
    killed, alive = dead_pid(), os.getpid()
    left = [data / "cache" / f".{HOST}.{killed}.tmp.digits-8px",
            runs / "checkpoints" / "digits-cnn" / f".{HOST}.{killed}.tmp.trial-0.keras"]
    kept = runs / "checkpoints" / "digits-cnn" / f".{HOST}.{alive}.tmp.trial-9.keras"
    left[0].mkdir(parents=True)
    (left[0] / "x_train.npy").write_bytes(b"half")
    kept.parent.mkdir(parents=True)
    for path in (left[1], kept):
        path.write_bytes(b"half")

    env = {**os.environ, **runs_env, "DATASET": "digits", "SPACE": "cnn", "TRIALS": "2", "EPOCHS": "1"}
    searches = [subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [search.communicate(timeout=600) for search in searches]
    for search, (_, err) in zip(searches, outputs):
        assert search.returncode == 0, err[-3000:]
        assert "Traceback" not in err
    study = optuna.load_study(study_name="digits-cnn", storage=default_storage_url(runs / "optuna.db"))
    assert sum(t.state.is_finished() for t in study.trials) >= 2
    queued = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(queued) == len(get_space("cnn").initial_params((8, 8, 1)))  # the starting recipes, queued once

    from mlflow.tracking import MlflowClient

    client = MlflowClient(default_storage_url(runs / "mlflow.db"))
    [experiment] = [e for e in client.search_experiments() if e.name == "digits-cnn"]
    parents = client.search_runs([experiment.experiment_id], "attributes.run_name = 'digits-cnn'")
    assert len(parents) == 1
    assert not any(path.exists() for path in left) and kept.exists()


@contextmanager
def small_disk(path: Path, size: str = "64m"):
    """A tmpfs of ``size`` at ``path`` (root only; skipped where mounting is not allowed)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small disk here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` up to ``leave`` free bytes."""
    filler = disk / "filler"
    with filler.open("wb") as f:
        try:
            f.write(b"\0" * max(0, shutil.disk_usage(disk).free - leave))
            f.flush()
        except OSError:
            pass
    return filler


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp." in p.name]


def test_a_full_disk_during_export_keeps_the_old_model_and_says_so(runs_env, tmp_path, capsys, monkeypatch):
    with small_disk(tmp_path / "disk") as disk:
        monkeypatch.setenv("RUNS_DIR", str(disk / "runs"))
        args = ["search", "--dataset", "digits", "--space", "mlp", "--trials", "1", "--epochs", "1"]
        assert main(args) == 0
        model = disk / "runs" / "exports" / "digits-mlp" / "model.keras"
        before = model.read_bytes()
        fill(disk)
        capsys.readouterr()
        assert main(["export", "--study", "digits-mlp"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: disk full: cannot write {model}") and "\n" not in err
        assert model.read_bytes() == before and leftovers(disk) == []
        (disk / "filler").unlink()
        assert main(["evaluate", "--study", "digits-mlp"]) == 0


def test_a_full_disk_during_the_search_stops_it_at_once_and_keeps_the_finished_trials(runs_env, tmp_path, capsys,
                                                                                     monkeypatch):
    from imgsearch.trials.checkpoints import BestCheckpoint

    offer, offers = BestCheckpoint.offer, []

    def offer_on_a_full_disk(self, trial, value, model):
        offers.append(trial.number)
        if len(offers) == 2:  # the second trial's model meets a full disk
            fill(disk)
        return offer(self, trial, 2.0, model)  # always the best, so it is saved

    monkeypatch.setattr(BestCheckpoint, "offer", offer_on_a_full_disk)
    with small_disk(tmp_path / "disk") as disk:
        monkeypatch.setenv("RUNS_DIR", str(disk / "runs"))
        # One hidden layer: a sampled 4 x 1024 mlp saved with its optimizer is 37 MB, and its
        # checkpoint and export together would fill the 64 MB disk after the resume too.
        args = ["search", "--dataset", "digits", "--space", "mlp", "--max-layers", "1", "--trials", "4",
                "--epochs", "1"]
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "disk full" in err[-1]
        assert not any("unreachable" in line or "retrying" in line for line in err)
        assert leftovers(disk) == [] and len(offers) == 2
        (disk / "filler").unlink()
        study = optuna.load_study(study_name="digits-mlp", storage=default_storage_url(disk / "runs" / "optuna.db"))
        assert study.trials[0].state == optuna.trial.TrialState.COMPLETE, study.trials[0].user_attrs
        monkeypatch.setattr(BestCheckpoint, "offer", offer)
        assert main(args) == 0  # resumed once there is space
        study = optuna.load_study(study_name="digits-mlp", storage=default_storage_url(disk / "runs" / "optuna.db"))
        assert sum(t.state.is_finished() for t in study.trials) >= 4


def test_a_truncated_weights_file_stops_the_search_before_the_study_exists(runs_env, shared_weights, tmp_path, capsys):
    from imgsearch.spaces.backbones import ZOO

    name = ZOO["mobilenet_0.25"].weights_file
    weights = tmp_path / "weights"
    weights.mkdir()
    whole = (shared_weights / name).read_bytes()
    (weights / name).write_bytes(whole[: len(whole) // 2])
    args = ["search", "--dataset", "digits", "--space", "finetune", "--backbones", "mobilenet_0.25",
            "--weights-dir", str(weights), "--image-size", "32", "--trials", "1", "--epochs", "1"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {weights / name} is not a whole weights file (") and "\n" not in err
    storage = default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db")
    assert optuna.get_all_study_names(storage) == []


def test_kill_9_while_decoding_tiny_imagenet_leaves_no_decoder_running(runs_env, monkeypatch):
    """Large source images make each decoder's chunk take seconds, as the full set's do."""
    import io

    import numpy as np
    from PIL import Image

    import conftest

    ramp = np.linspace(0, 255, 800, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(np.stack([np.add.outer(ramp, ramp) // 2] * 3, axis=-1).astype(np.uint8)).save(buffer, "JPEG")
    monkeypatch.setattr(conftest, "jpeg_bytes", lambda seed, size=64: buffer.getvalue())
    conftest.make_tiny_tree(Path(runs_env["DATA_DIR"]), classes=("n001", "n002"), per_class=1500)
    env = {**os.environ, **runs_env, "DATASET": "tinyimagenet", "TRIALS": "1"}
    search = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        parent, decoders, deadline = psutil.Process(search.pid), [], time.monotonic() + 300
        while len(decoders) < 2 and search.poll() is None and time.monotonic() < deadline:
            # Decoding, past their start-up (0.2 s of CPU each; each then decodes for 3-4 s).
            decoders = [p for p in parent.children() if "spawn_main" in " ".join(p.cmdline())
                        and p.cpu_times().user > 1.0]
            time.sleep(0.05)
        assert decoders, "the search never started decoding"
        search.send_signal(signal.SIGKILL)
        search.wait()
        time.sleep(1)
        running = [p for p in decoders if _running(p)]
        assert running == [], f"{len(running)} decoders still running 1 s after their parent was killed"
    finally:
        search.kill()


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (killed, waiting to be reaped: this machine's init is slow to)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def mariadb_url():
    import pymysql

    name = f"imgsearch_{uuid.uuid4().hex[:8]}"
    try:
        server = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="")
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"MariaDB is not running at 127.0.0.1:3306 (.ci/run starts it): {exc}")
    with server.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield f"mysql+pymysql://root@127.0.0.1:3306/{name}"
    finally:
        with server.cursor() as cursor:
            cursor.execute(f"DROP DATABASE {name}")
        server.close()


def test_a_search_on_mariadb_works(runs_env, mariadb_url, capsys):
    args = ["search", "--dataset", "digits", "--space", "mlp", "--trials", "2", "--epochs", "1",
            "--storage", mariadb_url]
    assert main(args) == 0
    study = optuna.load_study(study_name="digits-mlp", storage=mariadb_url)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) == 2
    info = json.loads((Path(runs_env["RUNS_DIR"]) / "exports" / "digits-mlp" / "model.json").read_text())
    assert info["trial"] in (0, 1)
