"""SPACE=autokeras: KerasTuner hyperparameters sampled by Optuna under AutoKeras's own names."""

from __future__ import annotations

import keras_tuner
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from spaces.autokeras_space import OptunaHyperParameters, OptunaOracle

optuna.logging.set_verbosity(optuna.logging.WARNING)


def space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Choice("image_block_1/block_type", ["vanilla", "resnet"])
    hp.Int("filters", 16, 64, step=16)
    hp.Int("units", 8, 256, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.25)
    hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")
    hp.Boolean("normalize")
    hp.Fixed("optimizer", "adam")
    with hp.conditional_scope("image_block_1/block_type", ["resnet"]):
        hp.Choice("image_block_1/res_net_block_1/version", ["resnet50", "resnet101"])
    return hp


def populate(params: dict | None = None) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize")
    if params:
        study.enqueue_trial(params)
    trial = study.ask()
    oracle = OptunaOracle(trial, objective="val_accuracy", max_trials=1)
    oracle.hyperparameters = space()
    values = oracle.populate_space("0")["values"]
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert values == frozen.params
    return frozen


def test_every_kerastuner_type_maps_to_its_optuna_distribution():
    trial = populate({"image_block_1/block_type": "vanilla"})
    d = trial.distributions
    assert d["image_block_1/block_type"] == CategoricalDistribution(["vanilla", "resnet"])
    assert d["filters"] == IntDistribution(16, 64, step=16)
    assert d["units"] == IntDistribution(8, 256, log=True)
    assert d["dropout"] == FloatDistribution(0.0, 0.5, step=0.25)
    assert d["learning_rate"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert d["normalize"] == CategoricalDistribution([False, True])
    assert d["optimizer"] == CategoricalDistribution(["adam"]) and trial.params["optimizer"] == "adam"


@pytest.mark.parametrize("block_type, sampled", [("vanilla", False), ("resnet", True)])
def test_conditional_hyperparameters_are_sampled_only_when_active(block_type, sampled):
    trial = populate({"image_block_1/block_type": block_type})
    assert ("image_block_1/res_net_block_1/version" in trial.params) == sampled


def test_a_hyperparameter_first_seen_while_building_is_sampled_by_optuna():
    study = optuna.create_study()
    study.enqueue_trial({"image_block_1/augment": True, "late/zoom": 0.2})
    trial = study.ask()
    hps = OptunaHyperParameters()
    hps.optuna_trial = trial
    assert hps.Boolean("image_block_1/augment") is True
    with hps.conditional_scope("image_block_1/augment", [True]):
        assert hps.Choice("late/zoom", [0.0, 0.1, 0.2], default=0.0) == 0.2  # not KerasTuner's default
    assert trial.params == {"image_block_1/augment": True, "late/zoom": 0.2}


def test_an_autokeras_trial_runs_through_our_objective_and_its_model_reloads(tmp_path):
    """AutoKeras's own vanilla starting point, 1 epoch on digits: tracked, checkpointed, reloadable."""
    import keras
    import numpy as np

    from search.checkpoints import BestCheckpoint
    from search.datasets import DatasetSpec
    from search.objective import Objective
    from search.study import open_study
    from search.tracking import Tracker, default_tracking_uri
    from spaces import get_space
    from storage import default_storage_url, open_storage

    data = DatasetSpec("digits").load(tmp_path / "data")
    settings = {"dataset": "digits", "image_size": None, "labels": "fine", "folder": None, "space": "autokeras",
                "epochs": 1, "sampler": "tpe", "pruner": "none", "seed": 0}
    study = open_study(open_storage(default_storage_url(tmp_path / "optuna.db")), "s", settings, exists=False)
    tracker = Tracker(default_tracking_uri(tmp_path / "mlflow.db"), study, settings, tmp_path / "artifacts")
    checkpoint = BestCheckpoint(tmp_path / "checkpoints")
    space = get_space("autokeras")
    study.enqueue_trial(space.initial_params(data.image_shape)[0])
    study.optimize(Objective(space, data, 1, tracker, checkpoint, fixed=settings, seed=0), n_trials=1)

    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value > 0.5
    assert trial.params["image_block_1/block_type"] == "vanilla"
    assert "image_block_1/conv_block_1/filters_0_0" in trial.params  # sampled while AutoKeras built the model
    logged = tracker.client.get_run(trial.user_attrs["mlflow_run_id"]).data.params
    assert {name: str(value) for name, value in trial.params.items()}.items() <= logged.items()

    _, path = checkpoint.best(study)
    model = keras.saving.load_model(path, compile=False)
    assert model.inputs[0].dtype == "uint8"
    predicted = model.predict(np.asarray(data.x_val), verbose=0).argmax(axis=1)
    assert float((predicted == data.y_val).mean()) == pytest.approx(trial.value, abs=0.02)
