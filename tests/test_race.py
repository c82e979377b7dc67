"""The race benchmark's own parts: any Tiny-ImageNet-layout input, the peers' space, best so far."""

from __future__ import annotations

import sys

import optuna
import pytest

from conftest import REPO, zip_tree

sys.path.insert(0, str(REPO / "benchmarks"))
import race  # noqa: E402


@pytest.mark.parametrize("given", ["data_dir", "folder", "zip"])
def test_the_race_takes_a_data_dir_the_zip_or_the_unpacked_folder(tiny_tree, tmp_path, given):
    archive = zip_tree(tiny_tree, tmp_path / "elsewhere.zip")
    path = {"data_dir": tiny_tree.parent, "folder": tiny_tree, "zip": archive}[given]
    data = race.load(race.data_dir_for(path, tmp_path / "work"), 16)
    assert data.num_classes == 3 and data.image_shape == (16, 16, 3)
    assert len(data.y_train) + len(data.y_val) == 18 and len(data.y_test) == 6


def test_anything_else_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="neither a DATA_DIR"):
        race.data_dir_for(tmp_path, tmp_path / "work")


def test_kerastuner_optuna_and_the_fixed_cnn_build_the_same_plain_space():
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    kt_model = race.plain_cnn(race.Sampled(hp=hp), (16, 16, 3), 4)
    assert set(hp.values) == {"filters", "kernel_size", "conv_blocks", "dense_units", "dropout", "learning_rate"}
    trial = optuna.create_study().ask()
    optuna_model = race.plain_cnn(race.Sampled(trial=trial), (16, 16, 3), 4)
    assert set(trial.params) == set(hp.values)
    fixed = race.fixed_cnn((16, 16, 3), 4)
    for model in (kt_model, optuna_model, fixed):
        assert model.inputs[0].dtype == "uint8" and tuple(model.outputs[0].shape) == (None, 4)


def test_best_so_far_counts_only_epochs_finished_by_then():
    points = [{"t": 10, "val_accuracy": 0.3}, {"t": 70, "val_accuracy": 0.5}, {"t": 200, "val_accuracy": 0.4}]
    assert race.best_so_far(points, 5) is None
    assert race.best_so_far(points, 60) == 0.3
    assert race.best_so_far(points, 600) == 0.5
