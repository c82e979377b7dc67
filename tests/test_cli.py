"""The command line: a full search / resume / export / evaluate round trip, and every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import REPO, jpeg_bytes, make_tiny_tree, run_cli, run_main, zip_tree
from imgsearch.command_line.main import main
from imgsearch.storage.urls import default_storage_url
from imgsearch import records


def test_search_resume_export_evaluate(runs_env, capsys):
    env = {**runs_env, "DATASET": "digits", "SPACE": "mlp", "TRIALS": "2", "EPOCHS": "2", "SEED": "0"}
    first = run_cli({**env, "TRIALS_PER_PROCESS": "1"})  # the second trial runs in a fresh process
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("continuing in a fresh one") == 1
    assert "0/2 trials finished" in first.stdout and "1/2 trials finished" in first.stdout
    assert "best trial" in first.stdout and "exports/digits-mlp/model.keras" in first.stdout

    second = run_main(capsys, {**env, "TRIALS": "3"})  # resumes, in this process: adds exactly one trial
    assert second.returncode == 0, second.stderr[-3000:]
    assert "2/3 trials finished" in second.stdout

    runs = Path(runs_env["RUNS_DIR"])
    study = optuna.load_study(study_name="digits-mlp", storage=default_storage_url(runs / "optuna.db"))
    finished = [t for t in study.trials if t.state.is_finished() and t.state.name != "FAIL"]
    assert len(finished) == 3
    assert study.user_attrs[records.SETTINGS_ATTR]["epochs"] == 2
    # Each process seeds its sampler past the trials already drawn: no configuration repeats.
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == len(study.trials)

    export_dir = runs / "exports" / "digits-mlp"
    client = MlflowClient(default_storage_url(runs / "mlflow.db"))
    experiment = client.get_experiment_by_name("digits-mlp")
    parent = study.user_attrs["mlflow_parent_run_id"]
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 3
    assert {int(r.data.tags["optuna.trial"]) for r in children} == {0, 1, 2}
    assert all(r.data.metrics.get("val_accuracy") is not None for r in children)

    evaluation = json.loads((export_dir / "evaluation.json").read_text())
    assert {"top1", "top5", "loss", "n_test", "per_class_accuracy"} <= set(evaluation)
    assert evaluation["n_test"] == 360 and evaluation["top1"] > 0.5
    assert (export_dir / "confusion_matrix.png").stat().st_size > 1000
    parent_run = client.get_run(parent)
    assert parent_run.data.metrics["test_top1"] == pytest.approx(evaluation["top1"])
    versions = client.search_model_versions("name = 'digits-mlp'")
    best = max(study.best_trials, key=lambda t: t.value)
    # One registered version per export: the resumed search exported again only if its trial is the best.
    assert len(versions) == (2 if best.number == 2 else 1)
    latest = max(versions, key=lambda v: int(v.version))
    # The version is logged from the exported trial's own run and says which trial it is.
    assert latest.tags["optuna.trial"] == str(json.loads((export_dir / "model.json").read_text())["trial"])
    assert latest.tags["objective"] == f"{best.value:.4f}"  # no float32 noise (0.9305555820465088)
    assert latest.tags["test_top1"] == f"{evaluation['top1']:.4f}"  # the export's test scores
    assert latest.run_id == study.trials[int(latest.tags["optuna.trial"])].user_attrs[records.RUN_ID_ATTR]
    assert f"trial {latest.tags['optuna.trial']} " in latest.description

    # The exported model takes raw uint8 images and reproduces the evaluation.
    import keras

    from imgsearch.datasets import DatasetSpec

    data = DatasetSpec("digits").load(Path(runs_env["DATA_DIR"]))
    model = keras.saving.load_model(export_dir / "model.keras", compile=False)
    predicted = model.predict(np.asarray(data.x_test), verbose=0).argmax(axis=1)
    assert float((predicted == data.y_test).mean()) == pytest.approx(evaluation["top1"])

    # export / evaluate on their own, the study found without DATASET (only one in storage).
    (export_dir / "evaluation.json").unlink()
    assert main(["export"]) == 0 and main(["evaluate"]) == 0
    assert json.loads((export_dir / "evaluation.json").read_text())["top1"] == pytest.approx(evaluation["top1"])


def test_bad_input_via_a_real_process_is_one_line(runs_env):
    result = run_cli(runs_env, "--dataset", "imagenet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown DATASET 'imagenet'")
    assert "Traceback" not in result.stderr


BAD_INPUTS = [
    (["--dataset", "imagenet"], "unknown DATASET 'imagenet'"),
    (["--dataset", "digits", "--space", "resnet"], "unknown SPACE 'resnet'"),
    (["--dataset", "digits", "--sampler", "bayes"], "unknown SAMPLER 'bayes'"),
    (["--dataset", "digits", "--pruner", "always"], "unknown PRUNER 'always'"),
    (["--dataset", "digits", "--trials", "0"], "TRIALS=0: must be at least 1"),
    (["--dataset", "digits", "--trials", "-3"], "TRIALS=-3: must be at least 1"),
    (["--dataset", "digits", "--epochs", "0"], "EPOCHS=0: must be at least 1"),
    (["--dataset", "digits", "--trials", "many"], "invalid int value: 'many'"),
    (["--dataset", "digits", "--max-epoch-seconds", "-1"], "MAX_EPOCH_SECONDS=-1: must be at least 0"),
    (["--dataset", "digits", "--storage", "nonsense"], "is not a database URL"),
    (["--dataset", "digits", "--storage", "postgresql://u:pw@127.0.0.1:1/x"], "127.0.0.1:1"),
    (["--dataset", "digits", "--image-size", "4"], "IMAGE_SIZE=4: must be from 8 to 512"),
    (["--dataset", "folder"], "DATASET=folder needs FOLDER"),
    (["export"], "no study"),
    (["search"], "set DATASET or STUDY"),
]


@pytest.mark.parametrize("argv,message", BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_creates_no_study(runs_env, capsys, argv, message):
    if argv == ["export"]:
        argv = ["export", "--study", "missing"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert "pw@" not in err
    db = Path(runs_env["RUNS_DIR"]) / "optuna.db"
    if db.exists():
        assert optuna.get_all_study_names(default_storage_url(db)) == []


def test_bad_env_value_is_one_line(runs_env, monkeypatch, capsys):
    monkeypatch.setenv("EPOCHS", "ten")
    assert main(["--dataset", "digits"]) == 2
    assert capsys.readouterr().err.strip() == "error: EPOCHS='ten' is not a valid int"


def test_resume_with_other_settings_is_refused_and_leaves_the_study(runs_env, capsys):
    from imgsearch.trials.study import open_study, resolve_settings
    from imgsearch.storage.optuna_storage import open_storage

    Path(runs_env["RUNS_DIR"]).mkdir()
    storage = open_storage(default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))
    settings, _ = resolve_settings(storage, "digits-auto", {"dataset": "digits", "epochs": 3})
    open_study(storage, "digits-auto", settings, exists=False)
    assert main(["--dataset", "digits", "--epochs", "5"]) == 2
    assert "created with EPOCHS=3, not 5" in capsys.readouterr().err
    assert optuna.load_study(study_name="digits-auto", storage=storage).user_attrs[records.SETTINGS_ATTR]["epochs"] == 3


def test_in_process_restart_carries_on_with_what_is_left_of_the_timeout(runs_env, capsys):
    argv = ["--dataset", "digits", "--space", "mlp", "--trials", "2", "--epochs", "1", "--trials-per-process", "1",
            "--timeout", "3600"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("continuing in a fresh one") == 1 and "1/2 trials finished" in out
    assert " s of the 3600 s budget searching" in out  # the budget it began with, not what the last process had
    study = optuna.load_study(study_name="digits-mlp",
                              storage=default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))
    assert len(study.trials) == 2


def _truncated_zip(data: Path, tmp: Path) -> list[str]:
    archive = zip_tree(make_tiny_tree(tmp / "src"), tmp / "full.zip")
    data.mkdir(parents=True)
    (data / "tiny-imagenet-200.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    return ["--dataset", "tinyimagenet"]


def _no_val_annotations(data: Path, tmp: Path) -> list[str]:
    (make_tiny_tree(data) / "val" / "val_annotations.txt").unlink()
    return ["--dataset", "tinyimagenet"]


def _corrupt_jpegs(data: Path, tmp: Path) -> list[str]:
    images = make_tiny_tree(data) / "train" / "n003" / "images"
    for i in range(3):
        (images / f"n003_{i}.JPEG").write_bytes(b"not a jpeg")
    return ["--dataset", "tinyimagenet"]


def _empty_class(data: Path, tmp: Path) -> list[str]:
    for image in (make_tiny_tree(data) / "train" / "n002" / "images").iterdir():
        image.unlink()
    return ["--dataset", "tinyimagenet"]


def _one_class_folder(data: Path, tmp: Path) -> list[str]:
    for split in ("train", "validation"):
        (tmp / "photos" / split / "cat").mkdir(parents=True)
        for i in range(3):
            (tmp / "photos" / split / "cat" / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    return ["--dataset", "folder", "--folder", str(tmp / "photos"), "--image-size", "16"]


def _no_validation_classes(data: Path, tmp: Path) -> list[str]:
    for name in ("cat", "dog"):
        (tmp / "photos" / "train" / name).mkdir(parents=True)
        for i in range(3):
            (tmp / "photos" / "train" / name / f"{i}.jpg").write_bytes(jpeg_bytes(i))
    (tmp / "photos" / "validation").mkdir()
    return ["--dataset", "folder", "--folder", str(tmp / "photos"), "--image-size", "16"]


def _offline(data: Path, tmp: Path) -> list[str]:
    return ["--dataset", "tinyimagenet"]  # the download URL points at a closed port (below)


BAD_DATA = [
    (_truncated_zip, "is not a readable zip (File is not a zip file); truncated download?"),
    (_no_val_annotations, "missing val/val_annotations.txt"),
    (_corrupt_jpegs, "3 of 18 training images are unreadable"),
    (_empty_class, "train/n002/images has no images"),
    (_one_class_folder, "found 1 class folder"),
    (_no_validation_classes, "photos/validation: no class folders (expected validation/<class>/*"),
    (_offline, "put tiny-imagenet-200.zip in"),
]


@pytest.mark.parametrize("prepare,message", BAD_DATA, ids=[p.__name__.strip("_") for p, _ in BAD_DATA])
def test_bad_data_is_one_line_exit_2_and_creates_no_study(runs_env, tmp_path, capsys, monkeypatch, prepare, message):
    monkeypatch.setattr("imgsearch.datasets.tinyimagenet.URL", "http://127.0.0.1:9/tiny-imagenet-200.zip")
    argv = prepare(Path(runs_env["DATA_DIR"]), tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err
    assert optuna.get_all_study_names(default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db")) == []


def test_a_read_only_runs_dir_is_one_line_exit_2(runs_env, tmp_path):
    runs = tmp_path / "readonly"
    runs.mkdir()
    command = [sys.executable, "-m", "imgsearch", "--dataset", "digits"]
    if os.geteuid() == 0:  # root writes through permissions: mount a read-only file system there instead
        command = ["unshare", "--mount", "sh", "-c", 'mount -t tmpfs -o ro tmpfs "$0" && exec "$@"', str(runs),
                   *command]
    else:
        runs.chmod(0o555)
    result = subprocess.run(command, cwd=REPO, env={**os.environ, **runs_env, "RUNS_DIR": str(runs)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == f"error: RUNS_DIR {runs} is not writable"


def test_a_worker_cannot_join_a_missing_study(runs_env, capsys):
    runs = Path(runs_env["RUNS_DIR"])
    assert main(["worker", "--dataset", "digits", "--study", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: no study database at {runs / 'optuna.db'}; run a search first, or set RUNS_DIR or STORAGE"
    assert not runs.exists()  # a mistyped RUNS_DIR is not created
    from imgsearch.storage.optuna_storage import open_storage

    runs.mkdir()
    open_storage(default_storage_url(runs / "optuna.db"))  # a study database without that study
    assert main(["worker", "--dataset", "digits", "--study", "nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no study 'nowhere' in sqlite:///") and "\n" not in err


def test_a_worker_with_other_settings_is_refused_and_leaves_the_study(runs_env, capsys):
    from imgsearch.trials.study import open_study, resolve_settings
    from imgsearch.storage.optuna_storage import open_storage

    Path(runs_env["RUNS_DIR"]).mkdir()
    storage = open_storage(default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))
    settings, _ = resolve_settings(storage, "shared", {"dataset": "digits", "space": "mlp", "epochs": 3})
    open_study(storage, "shared", settings, exists=False)
    for argv, message in ((["--epochs", "5"], "created with EPOCHS=3, not 5"),
                          (["--space", "cnn"], "created with SPACE=mlp, not cnn"),
                          (["--max-blocks", "2"], "MAX_BLOCKS does not apply to SPACE=mlp")):
        assert main(["worker", "--study", "shared", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and message in err and "\n" not in err, err
    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.user_attrs[records.SETTINGS_ATTR] == settings and study.trials == []


def test_a_search_whose_trials_all_fail_stops_after_five_in_a_row_and_says_why(runs_env, capsys):
    runs = Path(runs_env["RUNS_DIR"])
    runs.mkdir()
    (runs / "checkpoints").write_text("")  # a file where the checkpoint folder goes: saving every model fails
    assert main(["--dataset", "digits", "--space", "mlp", "--epochs", "1", "--trials", "20", "--pruner", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: search stopped: 5 trials failed in a row, the last with: ") and "\n" not in err
    assert "checkpoints" in err, err
    study = optuna.load_study(study_name="digits-mlp", storage=default_storage_url(runs / "optuna.db"))
    assert [t.state.name for t in study.trials] == ["FAIL"] * 5
