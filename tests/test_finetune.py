"""The fine-tuning space: the backbone zoo, weights from a folder, freezing, the two phases, real transfer."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import optuna
import pytest

from imgsearch.storage.errors import UserError
from imgsearch.command_line.main import parse_args
from imgsearch.trials.study import get_space
from imgsearch.spaces.backbones import ZOO, WeightsUnavailable, blocks
from imgsearch.spaces.catalog import BACKBONE_FAMILIES, parse_backbones
from imgsearch.spaces.finetune import tunable_layers
from conftest import new_search
from imgsearch import records

optuna.logging.set_verbosity(optuna.logging.WARNING)

MOBILENET_FILE = "mobilenet_2_5_224_tf_no_top.h5"
# A plain recipe; tests override what they look at.
RECIPE = {"backbone": "mobilenet_0.25", "resolution": 96, "cut_blocks": 0, "aug_flip": False, "aug_rotation": 0.0,
          "aug_zoom": 0.0, "aug_translation": 0.0, "head_pooling": "gap", "head_layers": 0,
          "frozen_epoch_share": 0.5, "unfreeze_fraction": 0.25, "finetune_lr_factor": 0.1,
          "optimizer": "adam", "learning_rate": 1e-3, "weight_decay": 1e-5, "label_smoothing": 0.0, "batch_size": 16}


def build(params=None, shape=(16, 16, 3), classes=3, **options):
    space = get_space("finetune", **{"weights": "none", **options})
    trial = optuna.trial.FixedTrial({**RECIPE, **(params or {})})
    return space.build(trial, shape, classes), trial


def images(n=8, shape=(16, 16, 3), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, *shape), dtype=np.uint8), np.arange(n) % classes


def test_weight_files_and_hashes_are_the_ones_keras_asks_for(monkeypatch):
    """The zoo's file names and hashes, checked against what each keras.applications model requests."""
    from keras.src.utils import file_utils

    class Asked(Exception):
        pass

    def record(fname, origin=None, file_hash=None, **_):
        raise Asked(fname, file_hash)

    monkeypatch.setattr(file_utils, "get_file", record)
    for backbone in ZOO.values():
        with pytest.raises(Asked) as asked:
            backbone.build("imagenet")
        assert asked.value.args == (backbone.weights_file, backbone.weights_hash), backbone.name
        keras.backend.clear_session()


@pytest.mark.parametrize("name", [variants[0] for variants in BACKBONE_FAMILIES.values()])
def test_every_backbone_family_builds_trains_a_step_and_exports(name, tmp_path):
    """One variant per family: a family's variants differ only in width, which the file and hash
    test above covers for each."""
    candidate, _ = build({"backbone": name, "unfreeze_fraction": 1.0})
    model = candidate.model
    x, y = images()
    for phase in candidate.phases:
        if phase.start:
            phase.start()
        model.run_eagerly = True  # one step: tracing DenseNet's train step alone takes 15 s here
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert reloaded.inputs[0].dtype == "uint8" and tuple(reloaded.inputs[0].shape) == (None, 16, 16, 3)
    np.testing.assert_allclose(reloaded(x, training=False), model(x, training=False), atol=1e-5)
    keras.backend.clear_session()


def test_cutting_blocks_and_grayscale_input():
    whole, _ = build({"cut_blocks": 0})
    cut, _ = build({"cut_blocks": 2, "head_pooling": "flatten"}, shape=(12, 12, 1))
    backbone = backbone_of(whole.model)
    ends = blocks(backbone, "mobilenet_0.25")
    assert len(ends) == 13 and ends[-1] == "conv_pw_13_relu"
    cut_backbone = backbone_of(cut.model)
    assert cut_backbone.layers[-1].name == ends[-3]
    assert cut.model.inputs[0].shape[-1] == 1 and cut.model.get_layer("gray_to_rgb")
    x, y = images(shape=(12, 12, 1))
    assert cut.model.predict(x, verbose=0).shape == (8, 3)


def backbone_of(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def snapshot(layers):
    return [[keras.ops.convert_to_numpy(w) for w in layer.weights] for layer in layers]


def changed(before, after):
    return [any(not np.array_equal(a, b) for a, b in zip(old, new)) for old, new in zip(before, after)]


def test_frozen_phase_trains_the_head_only_and_finetune_the_top_layers_only():
    candidate, _ = build({"unfreeze_fraction": 0.25, "learning_rate": 1e-2, "finetune_lr_factor": 0.3})
    model, backbone = candidate.model, backbone_of(candidate.model)
    fresh = ZOO["mobilenet_0.25"].build(None)  # frozen layers no longer tell which weights can train
    tunable = [backbone.get_layer(layer.name) for layer in tunable_layers(fresh)]
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    head = model.get_layer("probabilities")
    x, y = images(32)

    start = snapshot(backbone.layers + [head])
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    after_frozen = snapshot(backbone.layers + [head])
    assert not any(changed(start[:-1], after_frozen[:-1])), "a frozen backbone weight moved"
    assert changed(start[-1:], after_frozen[-1:]) == [True], "the head did not train"

    finetune = candidate.phases[1]
    finetune.start()
    k = candidate.details["unfreeze_layers"]
    assert k == round(0.25 * len(tunable)) and candidate.details["backbone_layers"] == len(tunable)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-2 * 0.3)
    before = snapshot(tunable + norms)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    moved = changed(before, snapshot(tunable + norms))
    assert moved[:len(tunable)] == [False] * (len(tunable) - k) + [True] * k
    assert not any(moved[len(tunable):]), "batch norm weights or moving statistics moved"
    assert all(not layer.trainable for layer in norms)


def test_weights_from_a_folder_are_checked(tmp_path, shared_weights):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsUnavailable, match=f"no weights for mobilenet_0.25 in WEIGHTS_DIR=.*put Keras's {MOBILENET_FILE} there"):
        build({"backbone": "mobilenet_0.25"}, weights="imagenet", weights_dir=str(empty))
    with pytest.raises(UserError, match="no backbone in the choice can load its weights: no weights for mobilenet_0.25"):
        get_space("finetune", backbones="mobilenet_0.25", weights_dir=str(empty)).check_ready()

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / ZOO["efficientnet_b0"].weights_file).write_bytes(b"not the weights")
    with pytest.raises(UserError, match="has hash [0-9a-f]{32}, not the 50bc09e76180e00e4465e1a485ddc09d Keras expects"):
        build({"backbone": "efficientnet_b0"}, weights="imagenet", weights_dir=str(wrong))

    # A family narrows to the variants whose file is there; a named backbone without one is a note.
    space = get_space("finetune", backbones="mobilenet,mobilenet_v3_small", weights_dir=str(shared_weights))
    assert space.choice == ["mobilenet_0.25", "mobilenet_v3_small"]
    notes = space.check_ready()
    assert len(notes) == 1 and ZOO["mobilenet_v3_small"].weights_file in notes[0]
    assert space.initial_params((64, 64, 3))[0]["backbone"] == "mobilenet_0.25"

    candidate, _ = build({"backbone": "mobilenet_0.25"}, weights="imagenet", weights_dir=str(shared_weights))
    reference = keras.applications.MobileNet(alpha=0.25, include_top=False, weights=None, input_shape=(None, None, 3))
    reference.load_weights(shared_weights / MOBILENET_FILE)
    loaded = backbone_of(candidate.model)
    for ours, theirs in zip(loaded.weights, reference.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs))


def test_no_download_is_a_clear_error(tmp_path, monkeypatch):
    """WEIGHTS=imagenet without WEIGHTS_DIR uses Keras's download; with no network that is one clear line."""
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # nothing listens there: every download fails
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    from keras.src.utils import file_utils

    real_get_file = file_utils.get_file
    monkeypatch.setattr(file_utils, "get_file",  # never Keras's real cache, which may hold the file
                        lambda *a, **k: real_get_file(*a, **{**k, "cache_dir": str(tmp_path)}))
    space = get_space("finetune", backbones="mobilenet_0.25,mobilenet_v3_small")
    with pytest.raises(UserError, match=f"cannot download {MOBILENET_FILE} for mobilenet_0.25 .*put the file in WEIGHTS_DIR"):
        space.check_ready()


def test_parse_backbones():
    assert parse_backbones("mobilenet") == ["mobilenet_0.25", "mobilenet_0.5", "mobilenet_0.75", "mobilenet_1.0"]
    assert parse_backbones("VGG16, mobilenet_0.5") == ["mobilenet_0.5", "vgg16"]
    assert parse_backbones(None) == list(ZOO)
    assert parse_backbones("mobilenet", lambda name: name == "mobilenet_1.0") == ["mobilenet_1.0"]
    assert parse_backbones("mobilenet", lambda name: False) == parse_backbones("mobilenet")
    with pytest.raises(UserError, match="unknown backbone 'resnet9'"):
        parse_backbones("resnet9")
    with pytest.raises(UserError, match="unknown WEIGHTS 'random'; choose one of: imagenet, none"):
        parse_args(["search", "--weights", "random"])


def test_real_imagenet_weights_transfer(shared_dir, shared_weights, tmp_path):
    """MobileNet v1 0.25 with its real ImageNet weights, frozen, 2 epochs at 128 px on the Tiny ImageNet
    sample (about 0.72), against random weights (one epoch on 1,000 images: near chance whatever the epochs)."""
    from imgsearch.datasets import DatasetSpec

    (tmp_path / "tiny-imagenet-200.zip").symlink_to(shared_dir / "datasets" / "tiny-imagenet-sample.zip")
    data = DatasetSpec("tinyimagenet").load(tmp_path)
    recipe = {"resolution": 128, "frozen_epoch_share": 1.0, "batch_size": 64}
    accuracy = {}
    for weights in ("imagenet", "none"):
        keras.utils.set_random_seed(0)
        candidate, _ = build(recipe, data.image_shape, data.num_classes, weights=weights,
                             weights_dir=str(shared_weights))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            epochs, n = (2, len(data.x_train)) if weights == "imagenet" else (1, 1000)
            history = candidate.model.fit(data.x_train[:n], data.y_train[:n], batch_size=64, epochs=epochs,
                                          validation_data=(data.x_val, data.y_val), verbose=0)
        accuracy[weights] = history.history["val_accuracy"][-1]
        keras.backend.clear_session()
    print(f"val accuracy, frozen: {accuracy}")
    assert accuracy["imagenet"] >= 0.6, accuracy
    assert accuracy["none"] <= 0.25, accuracy


def test_search_records_both_phases_and_exports_a_model_for_raw_uint8(runs_env, capsys):
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    from imgsearch.command_line.main import main
    from imgsearch.datasets import DatasetSpec
    from imgsearch.storage.urls import default_storage_url
    from conftest import run_main

    env = {**runs_env, "DATASET": "digits", "SPACE": "finetune", "WEIGHTS": "none", "BACKBONES": "mobilenet_0.25",
           "TRIALS": "1", "EPOCHS": "2"}
    result = run_main(capsys, env)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = Path(runs_env["RUNS_DIR"])
    study = optuna.load_study(study_name="digits-finetune", storage=default_storage_url(runs / "optuna.db"))
    trial = study.trials[0]  # the queued starting point: half the epochs frozen, then the top quarter tuned
    assert trial.params["backbone"] == "mobilenet_0.25" and trial.params["frozen_epoch_share"] == 0.5
    assert sorted(trial.intermediate_values) == [0, 1], "the phases do not share one epoch count"
    assert study.user_attrs[records.SETTINGS_ATTR][records.SPACE_OPTIONS] == {
        "backbones": "mobilenet_0.25", "weights": "none"}

    client = MlflowClient(default_storage_url(runs / "mlflow.db"))
    run = client.get_run(trial.user_attrs[records.RUN_ID_ATTR])
    params = run.data.params
    assert params["backbone"] == "mobilenet_0.25" and params["cut_blocks"] == "0"
    assert int(params["unfreeze_layers"]) > 0 and params["epochs_frozen"] == "1" and params["epochs_finetune"] == "1"
    assert float(params["finetune_learning_rate"]) == pytest.approx(float(params["learning_rate"]) * 0.1)
    assert [m.value for m in client.get_metric_history(run.info.run_id, "phase")] == [1, 2]
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "learning_rate")]
    assert rates[1] == pytest.approx(rates[0] * 0.1)

    data = DatasetSpec("digits").load(Path(runs_env["DATA_DIR"]))
    model = keras.saving.load_model(runs / "exports" / "digits-finetune" / "model.keras", compile=False)
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape) == (None, 8, 8, 1)
    assert model.predict(data.x_test[:5], verbose=0).shape == (5, 10)

    capsys.readouterr()
    assert main(["--dataset", "digits", "--space", "finetune", "--backbones", "vgg16"]) == 2  # recorded backbones
    assert "created with BACKBONES=mobilenet_0.25, not vgg16" in capsys.readouterr().err
    assert main(["--dataset", "digits", "--space", "cnn", "--backbones", "vgg16"]) == 2  # a new digits-cnn study
    assert "BACKBONES does not apply to SPACE=cnn" in capsys.readouterr().err


def test_search_stops_at_once_when_no_backbone_can_load(runs_env, tmp_path, capsys):
    from conftest import run_main

    empty = tmp_path / "weights"
    empty.mkdir()
    result = run_main(capsys, {**runs_env, "DATASET": "digits", "SPACE": "finetune",
                               "BACKBONES": "mobilenet_0.25,vgg16", "WEIGHTS_DIR": str(empty), "TRIALS": "1"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no backbone in the choice can load its weights: ")
    assert MOBILENET_FILE in lines[-1] and ZOO["vgg16"].weights_file in lines[-1]
    assert "Traceback" not in result.stderr


def test_a_trial_whose_backbone_has_no_weights_fails_alone(tmp_path, shared_weights, digits):
    from imgsearch.records import FAIL_REASON_ATTR

    search = new_search(tmp_path, digits, "finetune", epochs=1, pruner=optuna.pruners.NopPruner(), trials=1,
                        backbones="mobilenet_0.25,mobilenet_v3_small", weights_dir=str(shared_weights),
                        first_trials=[{**RECIPE, "backbone": "mobilenet_v3_small"},
                                      {**RECIPE, "backbone": "mobilenet_0.25", "frozen_epoch_share": 1.0}])
    study = search.study
    search.run()  # the failed trial is not counted: the study goes on to the next
    failed, complete = study.trials
    assert failed.state == optuna.trial.TrialState.FAIL
    assert failed.user_attrs[FAIL_REASON_ATTR] == (
        f"WeightsUnavailable: no weights for mobilenet_v3_small in WEIGHTS_DIR={shared_weights.resolve()}: "
        f"put Keras's {ZOO['mobilenet_v3_small'].weights_file} there")
    assert complete.state == optuna.trial.TrialState.COMPLETE


def test_a_resumed_study_keeps_its_recorded_backbones(shared_weights, tmp_path):
    """The family is expanded once, when the study is created; resuming uses the record, folders may differ."""
    from imgsearch.records import SPACE_OPTIONS
    from imgsearch.trials.study import resolve_space

    settings = {"space": "finetune"}
    created = resolve_space(settings, {"backbones": "mobilenet", "weights_dir": str(shared_weights)}, False, "s")
    assert settings[SPACE_OPTIONS] == {"backbones": "mobilenet_0.25", "weights": "imagenet"}
    again = resolve_space(settings, {"backbones": "mobilenet", "weights_dir": str(shared_weights)}, True, "s")
    elsewhere = resolve_space(settings, {"weights_dir": str(tmp_path)}, True, "s")  # another worker's folder
    assert created.choice == again.choice == elsewhere.choice == ["mobilenet_0.25"]
    assert elsewhere.weights_dir == str(tmp_path)
    with pytest.raises(UserError, match="created with WEIGHTS=imagenet, not none"):
        resolve_space(settings, {"weights": "none"}, True, "s")
