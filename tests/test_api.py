"""The Python API (``import imgsearch``), ``predict`` and the export that loads in plain Keras."""

import os
import re
import signal
import subprocess
import sys
import venv

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

import imgsearch
from imgsearch.datasets.arrays import from_arrays

pytestmark = pytest.mark.xdist_group("api")


def _colours(n=240, size=12, seed=0):
    """Class k has a bright channel k: a model learns it in an epoch."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 60, (n, size, size, 3), dtype=np.uint8)
    x[np.arange(n), :, :, y] += 150
    return x, y


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """One quick search on arrays (an MLP, 1 epoch), given test arrays, and what it left."""
    root = tmp_path_factory.mktemp("api")
    x, y = _colours()
    x_test, y_test = _colours(60, seed=1)
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    mlflow_variables = {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")}
    result = imgsearch.search(x, y, x_test=x_test, y_test=y_test, class_names=["red", "green", "blue"],
                              space="mlp", max_layers=1, trials=1, epochs=1, runs_dir=str(root / "runs"),
                              data_dir=str(root / "data"))
    after = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    # MLflow's fluent API sets variables (the tracking URI) a later command would inherit: put back.
    assert {k: v for k, v in os.environ.items() if k.startswith("MLFLOW_")} == mlflow_variables
    return {"root": root, "result": result, "x": x, "y": y, "x_test": x_test, "y_test": y_test,
            "handlers": (before, after)}


def test_a_search_on_arrays_returns_its_result_and_puts_back_the_signal_handlers(searched):
    result = searched["result"]
    before, after = searched["handlers"]
    assert after == before
    board = result.leaderboard()
    assert list(board.columns) == ["trial", "family", "params", "data", "epochs", "seconds", "parameters", "val",
                                   "state", "why"]
    assert board.loc[0, "trial"] == result.best_trial.number and board.loc[0, "state"] == "COMPLETE"
    assert board.loc[0, "parameters"] > 0 and board.loc[0, "epochs"] == 1
    assert result.model_path.is_file() and result.evaluation["n_test"] == 60
    assert result.study.user_attrs["settings"]["dataset"] == "arrays"


def test_a_resume_with_other_arrays_is_refused_and_leaves_the_study_as_it_was(searched):
    x, y = searched["x"].copy(), searched["y"]
    x[0, 0, 0, 0] ^= 1  # one pixel differs
    trials = len(searched["result"].study.get_trials())
    with pytest.raises(imgsearch.UserError, match="was made from other arrays"):
        imgsearch.search(x, y, x_test=searched["x_test"], y_test=searched["y_test"],
                         class_names=["red", "green", "blue"], space="mlp", trials=2, epochs=1,
                         runs_dir=str(searched["root"] / "runs"), data_dir=str(searched["root"] / "data"))
    assert len(searched["result"].study.get_trials()) == trials
    with pytest.raises(imgsearch.UserError, match="made from NumPy arrays in Python"):
        imgsearch.search(study="arrays-mlp", runs_dir=str(searched["root"] / "runs"),
                         data_dir=str(searched["root"] / "data"))
    again = imgsearch.load_result(runs_dir=str(searched["root"] / "runs"))
    assert again.model_path == searched["result"].model_path
    assert again.best_trial.number == searched["result"].best_trial.number


@pytest.mark.parametrize("call, message", [
    (lambda x, y: from_arrays(x.astype(np.float32) / 255, y), "must be uint8 images with values 0-255, not float32"),
    (lambda x, y: from_arrays(x[:, :, :, :2], y), r"must be images \(N, H, W\) or \(N, H, W, C\) with C 1 or 3"),
    (lambda x, y: from_arrays(x[None], y), "must be images"),
    (lambda x, y: from_arrays(x, y[:-1]), "y_train has 239 labels for the 240 images of x_train"),
    (lambda x, y: from_arrays(x, y.reshape(-1, 2)), r"one label per image \(N,\) or \(N, 1\)"),
    (lambda x, y: from_arrays(x, y, class_names=["a", "b"]), "labels run from 0 to 2, but there are 2 class names"),
    (lambda x, y: from_arrays(x, y + 0.5), "must hold integer class indices"),
    (lambda x, y: from_arrays(x, y, x_val=x[:10]), "give both x_val and y_val"),
    (lambda x, y: from_arrays(x, y, x_test=x[:10, :, :, :1], y_test=y[:10]), "x_test has 1 channels, x_train 3"),
    (lambda x, y: from_arrays(x[:, :, :8], y), "give image_size= to make them square"),
    (lambda x, y: imgsearch.search(x, y, dataset="digits"), "not both"),
    (lambda x, y: imgsearch.search(x, y, bugdet=10), "'bugdet' is not a setting \\(did you mean 'budget'\\?\\)"),
    (lambda x, y: imgsearch.search(x, y, budget="10"), "BUDGET='10': must be a float"),
    (lambda x, y: imgsearch.search(x, y, epochs=0), "EPOCHS=0: must be at least 1"),
    (lambda x, y: imgsearch.search(x, y, trials_per_process=5), "stays in the caller's process"),
], ids=["float", "two-channels", "five-axes", "label-count", "label-shape", "class-names", "float-labels",
        "half-val", "test-channels", "not-square", "both", "misspelt", "type", "range", "restart"])
def test_bad_arrays_and_settings_are_one_clear_error(call, message):
    x, y = _colours()
    with pytest.raises(imgsearch.UserError, match=message):
        call(x, y)


def test_arrays_are_split_and_resized_as_a_dataset_and_never_written_to():
    x, y = _colours(300, size=12)
    keep = x.copy()
    names = np.array(["red", "green", "blue"])[y]  # string labels: the sorted strings are the classes
    data = from_arrays(x, names, image_size=16)
    assert data.class_names == ["blue", "green", "red"] and data.image_shape == (16, 16, 3)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (216, 24, 60)
    assert np.array_equal(x, keep)
    gray = from_arrays(x[..., 0], y)
    assert gray.image_shape == (12, 12, 1) and gray.fingerprint != data.fingerprint


def _write_images(folder, images, names):
    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(images, names):
        Image.fromarray(image).save(folder / name)


def test_predict_on_files_gives_the_accuracy_the_evaluation_reported(searched, tmp_path, capsys):
    """The test arrays written as PNG files (lossless): predict reads them as the dataset was read."""
    result = searched["result"]
    _write_images(tmp_path / "images", searched["x_test"], [f"{i:03d}.png" for i in range(60)])
    table = imgsearch.predict(tmp_path / "images", model=result.model_path, top_k=2)
    assert list(table.columns) == ["image", "class_1", "probability_1", "class_2", "probability_2"]
    truth = np.array(["red", "green", "blue"])[searched["y_test"]]
    accuracy = float((table["class_1"].to_numpy() == truth).mean())
    assert accuracy == pytest.approx(result.evaluation["top1"], abs=0.01)
    from_arrays_table = result.predict(searched["x_test"], top_k=2)
    assert list(from_arrays_table["class_1"]) == list(table["class_1"])


def test_predict_takes_any_mode_and_size_and_refuses_what_is_not_an_image(searched, tmp_path, capsys):
    from conftest import run_main

    model = str(searched["result"].model_path)
    folder = tmp_path / "odd"
    folder.mkdir()
    rgb = searched["x_test"][0]
    Image.fromarray(rgb).convert("L").resize((30, 20)).save(folder / "gray.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "alpha.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(rgb).convert("P").save(folder / "palette.gif")
    (folder / "notes.txt").write_text("not an image, not an image suffix: not read")
    table = imgsearch.predict(folder, model=model)
    assert sorted(table["image"]) == ["alpha.png", "cmyk.jpg", "gray.png", "palette.gif"]
    assert set(table["class_1"]) <= {"red", "green", "blue"}

    (tmp_path / "fake.png").write_text("a text file named like an image")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    # The command line's predict, in this process (its process is not the point).
    for images, message in [(tmp_path / "fake.png", "1 of 1 images are unreadable or corrupt (e.g. fake.png)"),
                            (tmp_path / "empty", "no images in it"), (tmp_path / "bad.zip", "not a readable zip"),
                            (tmp_path / "nothing", "no such file or folder")]:
        done = run_main(capsys, {"RUNS_DIR": str(tmp_path / "runs")}, "predict", "--model", model, "--images",
                        str(images))
        assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
        assert message in done.stderr
    done = run_main(capsys, {"RUNS_DIR": str(searched["root"] / "runs"), "PREDICTIONS": str(tmp_path / "out.csv")},
                    "predict", "--images", str(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    assert re.search(r"^gray\.png: (red|green|blue) [01]\.\d{3}", done.stdout, re.M)
    assert (tmp_path / "out.csv").read_text().startswith("image,class_1,probability_1")


def _bare_python(tmp_path):
    """A Python with this venv's libraries but not this project: a venv whose one .pth file adds
    the site-packages folder (its .pth files, among them the editable install's, are not read)."""
    import site

    venv.create(tmp_path / "bare", with_pip=False)
    python = tmp_path / "bare" / "bin" / "python"
    bare_site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(bare_site, "libraries.pth"), "w") as pth:
        pth.write(site.getsitepackages()[0] + "\n")
    return python


def test_the_exported_models_load_in_plain_keras_without_this_project(searched, tmp_path):
    """The search's export, and a model with every backbone's preprocessing and nested models
    (an ensemble's shape) made portable: each loads, compiled or not, and predicts the same."""
    import keras
    from keras import layers

    from imgsearch.spaces import load_model
    from imgsearch.spaces.backbones import ZOO, BackbonePreprocess
    from imgsearch.spaces.common import SparseCrossentropyWithSmoothing
    from imgsearch.spaces.portable import portable_model

    def member(backbone):
        inputs = keras.Input((8, 8, 3), dtype="uint8")
        x = BackbonePreprocess(backbone, name="preprocess")(layers.Rescaling(1.0)(inputs))
        x = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3), layers.GlobalAveragePooling2D()])(x)
        return keras.Model(inputs, layers.Dense(3, activation="softmax")(x), name=f"member_{backbone}")

    inputs = keras.Input((8, 8, 3), dtype="uint8")
    members = [member(name)(inputs) for name in ZOO]
    ours = keras.Model(inputs, layers.Average()(members))
    ours.compile(loss=SparseCrossentropyWithSmoothing(0.1))
    x = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3)).astype(np.uint8)
    portable_model(ours).save(tmp_path / "ours.keras")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "expected.npy", ours.predict(x, verbose=0))
    export = searched["result"].model_path
    np.save(tmp_path / "expected_export.npy", load_model(export).predict(searched["x_test"], verbose=0))
    np.save(tmp_path / "x_test.npy", searched["x_test"])

    code = (
        "import importlib.util, sys\n"
        "import numpy as np, keras\n"
        "assert not [n for n in ('imgsearch', 'search', 'spaces', 'storage') if importlib.util.find_spec(n)]\n"
        f"for model, x, expected in [({str(tmp_path / 'ours.keras')!r}, 'x', 'expected'),\n"
        f"                           ({str(export)!r}, 'x_test', 'expected_export')]:\n"
        "    for compile in (True, False):\n"
        "        loaded = keras.saving.load_model(model, compile=compile)\n"
        f"        got = loaded.predict(np.load({str(tmp_path)!r} + f'/{{x}}.npy'), verbose=0)\n"
        f"        assert np.allclose(got, np.load({str(tmp_path)!r} + f'/{{expected}}.npy'), atol=1e-5)\n"
        "    assert loaded.inputs[0].dtype == 'uint8'\n"
        "print('ok', 'imgsearch' in sys.modules)\n"
    )
    done = subprocess.run([_bare_python(tmp_path), "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok False", done.stderr[-3000:]


def test_the_package_imports_without_tensorflow_and_the_console_command_works(tmp_path):
    code = ("import sys, imgsearch\n"
            "heavy = {'tensorflow', 'keras', 'optuna', 'mlflow', 'pandas'} & {m.split('.')[0] for m in sys.modules}\n"
            "assert not heavy, heavy\n"
            "assert callable(imgsearch.search) and issubclass(imgsearch.UserError, Exception)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    console = os.path.join(os.path.dirname(sys.executable), "imgsearch")
    done = subprocess.run([console, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: imgsearch") and "predict" in done.stdout


def test_the_readme_from_python_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """Exactly the README's code (in this process, as in a notebook): a search on arrays and on
    digits, leaderboards and predictions."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("\n## From Python\n"):]
    section = section[:section.index("\n## ", 5)]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "imgsearch.search(x, y" in code and 'dataset="digits"' in code and ".predict(" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert re.search(r"^\s*0\s+\d+\s+(red|green|blue)\s+[01]\.\d+", out, re.M), out[-3000:]
    assert "COMPLETE" in out and (tmp_path / "runs" / "exports" / "colours" / "model.keras").is_file()


def test_a_search_that_changes_nothing_exports_and_registers_nothing_again(tmp_path, capsys):
    from mlflow import MlflowClient

    from imgsearch.storage.layout import RunsLayout
    from imgsearch.storage.mlflow_store import local_tracking_uri

    settings = dict(dataset="digits", space="mlp", trials=1, epochs=1, runs_dir=str(tmp_path / "runs"),
                    data_dir=str(tmp_path / "data"))
    first = imgsearch.search(**settings)
    written = first.model_path.stat().st_mtime_ns
    again = imgsearch.search(**settings)  # the study has its trial: nothing trains, nothing changes
    assert "unchanged: the best trial is the one exported before" in capsys.readouterr().out
    assert again.model_path.stat().st_mtime_ns == written and again.evaluation == first.evaluation
    client = MlflowClient(local_tracking_uri(RunsLayout(tmp_path / "runs")))
    assert len(client.search_model_versions("name='digits-mlp'")) == 1
