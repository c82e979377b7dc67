"""SPACE=autokeras: KerasTuner hyperparameters sampled by Optuna under AutoKeras's own names."""

from __future__ import annotations

from pathlib import Path

import keras_tuner
import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from imgsearch.storage.errors import UserError
from imgsearch.spaces.autokeras_space import OptunaHyperParameters, OptunaOracle
from conftest import new_search
from imgsearch import records
from imgsearch.command_line.main import parse_args
from imgsearch.trials.study import get_space

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
        hp.Boolean("image_block_1/res_net_block_1/pretrained")
    return hp


def populate(params: dict | None = None, fixed: dict | None = None) -> optuna.trial.FrozenTrial:
    study = optuna.create_study(direction="maximize")
    if params:
        study.enqueue_trial(params)
    trial = study.ask()
    oracle = OptunaOracle(trial, fixed, objective="val_accuracy", max_trials=1)
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


def test_pretrained_no_pins_every_pretrained_hyperparameter_and_drops_that_starting_point():
    trial = populate({"image_block_1/block_type": "resnet"}, fixed={"pretrained": False})
    assert trial.distributions["image_block_1/res_net_block_1/pretrained"] == CategoricalDistribution([False])
    assert trial.params["image_block_1/res_net_block_1/pretrained"] is False
    assert trial.distributions["image_block_1/res_net_block_1/version"] == CategoricalDistribution(
        ["resnet50", "resnet101"])  # the rest is sampled as before

    everything = get_space("autokeras").initial_params((32, 32, 3))
    offline = get_space("autokeras", pretrained="no").initial_params((32, 32, 3))
    assert [c["image_block_1/block_type"] for c in everything] == ["vanilla", "resnet", "efficient"]
    assert offline == everything[:2]  # the EfficientNet-B7 starting point is the pretrained one
    assert get_space("autokeras", pretrained="no").check_ready() == []
    with pytest.raises(UserError, match="unknown PRETRAINED 'maybe'; choose one of: yes, no"):
        parse_args(["search", "--pretrained", "maybe"])


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


def vanilla() -> dict:
    """AutoKeras's first starting point: its small vanilla CNN."""
    from autokeras.tuners import task_specific

    return dict(task_specific.IMAGE_CLASSIFIER[0])


def test_an_autokeras_trial_runs_through_our_objective_and_its_model_reloads(tmp_path, digits):
    """AutoKeras's own vanilla starting point, 1 epoch on digits: tracked, checkpointed, reloadable."""
    import keras
    import numpy as np

    search = new_search(tmp_path, digits, "autokeras", epochs=1, pruner=optuna.pruners.NopPruner(), trials=1,
                        first_trials=[vanilla()])
    study, tracker, checkpoint, data = search.study, search.tracker, search.checkpoint, digits
    search.run()
    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value > 0.5
    assert trial.params["image_block_1/block_type"] == "vanilla"
    assert "image_block_1/conv_block_1/filters_0_0" in trial.params  # sampled while AutoKeras built the model
    run = tracker.client.get_run(trial.user_attrs[records.RUN_ID_ATTR])
    assert {name: str(value) for name, value in trial.params.items()}.items() <= run.data.params.items()

    _, path = checkpoint.best(study)
    model = keras.saving.load_model(path, compile=False)
    # The model AutoKeras built is described like any space's: its size and summary, once.
    assert run.data.metrics["param_count"] == model.count_params()
    summary = tracker.client.download_artifacts(run.info.run_id, "model_summary.txt", str(tmp_path))
    assert f"{model.count_params():,}" in open(summary).read()
    assert model.inputs[0].dtype == "uint8"
    predicted = model.predict(np.asarray(data.x_val), verbose=0).argmax(axis=1)
    assert float((predicted == data.y_val).mean()) == pytest.approx(trial.value, abs=0.02)


def test_the_median_pruner_stops_an_autokeras_trial_after_its_first_epoch(tmp_path, digits):
    search = new_search(tmp_path, digits, "autokeras", epochs=3,
                        pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    study, tracker, checkpoint, objective = search.study, search.tracker, search.checkpoint, search.objective
    study.add_trial(optuna.trial.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))
    study.enqueue_trial(vanilla())
    study.optimize(objective, n_trials=1)

    trial = study.trials[1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]
    assert trial.user_attrs[records.PRUNE_REASON_ATTR].startswith("by median after epoch 1 at ")
    run = tracker.client.get_run(trial.user_attrs[records.RUN_ID_ATTR])
    assert run.info.status == "KILLED" and run.data.tags["optuna.state"] == "PRUNED"
    assert [m.step for m in tracker.client.get_metric_history(run.info.run_id, "val_accuracy")] == [0]
    assert not any(checkpoint.folder.glob("*.keras"))


def test_a_model_over_max_model_size_is_pruned_before_training(tmp_path, digits):
    search = new_search(tmp_path, digits, "autokeras", epochs=1, pruner=optuna.pruners.NopPruner(), max_model_size=1000)
    study, tracker, objective = search.study, search.tracker, search.objective
    study.enqueue_trial(vanilla())
    study.optimize(objective, n_trials=1)

    trial = study.trials[0]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {}
    assert trial.user_attrs[records.PRUNE_REASON_ATTR].startswith("too large: Oversized model: ")
    assert trial.params["image_block_1/block_type"] == "vanilla"  # the trial's own model, not KerasTuner's default
    assert "val_accuracy" not in tracker.client.get_run(trial.user_attrs[records.RUN_ID_ATTR]).data.metrics


def test_cli_queues_the_starting_points_once_resumes_after_a_kill_and_exports(runs_env, tmp_path, capsys):
    """A search killed inside an AutoKeras trial, its scratch folder deleted, resumes from the study alone.

    MAX_MODEL_SIZE keeps AutoKeras's ResNet50 starting point (23 M parameters, 224 px) from
    training: it is pruned before its first batch, which alone takes 30 s of CPU here."""
    import json
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    import numpy as np
    from autokeras.tuners import task_specific

    from conftest import REPO, run_main
    from imgsearch.datasets import DatasetSpec
    from imgsearch.storage.urls import default_storage_url
    from imgsearch.trials.trial_target import counts

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    settings = {**runs_env, "DATASET": "digits", "SPACE": "autokeras", "EPOCHS": "2", "SEED": "0",
                "MAX_MODEL_SIZE": "1000000", "TMPDIR": str(scratch), "HEARTBEAT": "1", "TRIALS": "2",
                "HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}  # every download fails at once

    def load_study() -> optuna.Study:
        return optuna.load_study(study_name="digits-autokeras",
                                 storage=default_storage_url(Path(runs_env["RUNS_DIR"]) / "optuna.db"))

    def queued(study) -> list[dict]:  # by the study's creation, not retries of a killed trial
        return [t.system_attrs["fixed_params"] for t in study.trials
                if "fixed_params" in t.system_attrs and "failed_trial" not in t.system_attrs]

    # Offline, the pretrained EfficientNet-B7 starting point is left out, and no trial samples a pretrained block.
    starting_points = [dict(config) for config in task_specific.IMAGE_CLASSIFIER
                       if not any(k.endswith("/pretrained") and v for k, v in config.items())]
    assert len(starting_points) == 2

    # Killed inside trial 0 (AutoKeras's first starting point), while AutoKeras works in TMPDIR.
    out = tmp_path / "killed.txt"
    with out.open("w") as out_file:
        killed = subprocess.Popen([sys.executable, "-m", "imgsearch"], cwd=REPO, env={**os.environ, **settings},
                                  stdout=out_file, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not any(scratch.glob("autokeras-*")) and time.monotonic() < deadline and killed.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert any(scratch.glob("autokeras-*")), "the search never reached AutoKeras"
    assert "note: Keras cannot reach https://storage.googleapis.com/ (" in out.read_text()
    assert "to download the weights of AutoKeras's pretrained blocks: they are left out here" in out.read_text()
    study = load_study()
    assert [t.state.name for t in study.trials] == ["RUNNING", "WAITING"]
    assert queued(study) == starting_points
    shutil.rmtree(scratch)
    scratch.mkdir()

    resumed = run_main(capsys, settings)  # in this process: the killed one is the process boundary here
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0/2 trials finished" in resumed.stdout and "Traceback" not in resumed.stderr
    study = load_study()
    assert queued(study) == starting_points  # not queued again by the resumed search
    assert not [t for t in study.trials if t.params.get("image_block_1/efficient_net_block_1/pretrained")
                or t.params.get("image_block_1/res_net_block_1/pretrained")]
    assert study.trials[0].state.name == "FAIL"  # its process died: no heartbeat, failed and queued again
    [retry] = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state.name == "COMPLETE" and retry.params == study.trials[0].params
    assert "RUNNING" not in [t.state.name for t in study.trials]
    # As TRIALS counts them: resumed at once, a trial may start while the killed one still looks alive
    # (its heartbeat not yet stale), and be pruned as not needed.
    finished = [t for t in study.trials if counts(t)]
    assert len(finished) == 2 and all("image_block_1/block_type" in t.params for t in finished)
    resnet = study.trials[1]
    assert resnet.state.name == "PRUNED" and resnet.user_attrs[records.PRUNE_REASON_ATTR].startswith("too large")

    from imgsearch.command_line.main import main

    capsys.readouterr()
    assert main(["export", "--study", "digits-autokeras"]) == 0  # in this process: a fresh one is the next test
    assert main(["evaluate", "--study", "digits-autokeras"]) == 0
    evaluated = capsys.readouterr().out
    export_dir = Path(runs_env["RUNS_DIR"]) / "exports" / "digits-autokeras"
    result = json.loads((export_dir / "evaluation.json").read_text())
    assert f"top1 {result['top1']:.4f}" in evaluated and result["n_test"] == 360 and result["top1"] > 0.5
    from imgsearch.spaces import load_model

    model = load_model(export_dir / "model.keras")  # in this process AutoKeras is imported: see the next test
    data = DatasetSpec("digits").load(Path(runs_env["DATA_DIR"]))
    predicted = model.predict(np.asarray(data.x_test), verbose=0).argmax(axis=1)
    assert float((predicted == data.y_test).mean()) == pytest.approx(result["top1"], abs=1e-6)


def test_load_model_imports_autokeras_only_for_a_model_that_needs_it(tmp_path, digits):
    """In a fresh process: an AutoKeras model loads through spaces.load_model, another one without AutoKeras."""
    import subprocess
    import sys

    import keras

    from conftest import REPO

    search = new_search(tmp_path, digits, "autokeras", epochs=1, pruner=optuna.pruners.NopPruner())
    study, checkpoint, objective = search.study, search.checkpoint, search.objective
    study.enqueue_trial(vanilla())
    study.optimize(objective, n_trials=1)
    _, autokeras_model = checkpoint.best(study)
    plain = tmp_path / "plain.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]).save(plain)
    code = (
        "import sys, keras\nfrom imgsearch import spaces\n"
        "try:\n"
        f"    keras.saving.load_model({str(autokeras_model)!r})\n"
        "except TypeError as exc:\n"
        "    assert 'CastToFloat32' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('loaded without AutoKeras layers registered')\n"
        f"spaces.load_model({str(plain)!r})\n"
        "assert 'autokeras' not in sys.modules\n"
        f"model = spaces.load_model({str(autokeras_model)!r})\n"
        "assert 'autokeras' in sys.modules and model.inputs[0].dtype == 'uint8'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_an_image_block_trains_with_autokeras_own_schedule_kept(tmp_path, digits):
    """An ImageBlock trains one epoch through our objective with AdamW and AutoKeras's own
    learning-rate schedule (whose rate Keras cannot set): the schedule is kept instead of failing
    the trial. The vanilla block here; the resnet block runs in the CLI test above (AutoKeras's
    second starting point); efficient and xception, keras.applications wrappers like resnet,
    took 80 s each of make test and are left out."""
    import dataclasses

    few = dataclasses.replace(digits, x_train=digits.x_train[:64], y_train=digits.y_train[:64],
                              x_val=digits.x_val[:32], y_val=digits.y_val[:32])
    params = {"image_block_1/block_type": "vanilla", "optimizer": "adam_weight_decay", "learning_rate": 1e-3,
              "image_block_1/normalize": False, "image_block_1/augment": False, "classification_head_1/dropout": 0.0,
              "classification_head_1/spatial_reduction_1/reduction_type": "global_avg"}
    search = new_search(tmp_path, few, "autokeras", epochs=1, pruner=optuna.pruners.NopPruner(), pretrained="no",
                        trials=1, first_trials=[params])
    search.run()
    [trial] = search.study.trials
    assert trial.state.name == "COMPLETE", trial.user_attrs
    assert trial.params["image_block_1/block_type"] == "vanilla" and trial.params["optimizer"] == "adam_weight_decay"
