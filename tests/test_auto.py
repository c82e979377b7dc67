"""SPACE=auto: the family chosen first, each family's parameters under names of its own, a backbone
without weights never sampled, a frozen backbone's features kept, a trial at chance stopped early."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import optuna
import pytest

from conftest import new_search, run_cli, run_main
from imgsearch import records
from imgsearch.trials.study import get_space
from imgsearch.spaces import features
from imgsearch.spaces.auto import prefixed
from imgsearch.storage.urls import default_storage_url

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_each_family_builds_from_its_own_parameter_names_and_a_fixed_trial_replays_it():
    space = get_space("auto", weights="none", backbones="mobilenet_0.25")
    assert space.choice == ["cnn", "transfer", "autokeras"]
    for params in space.initial_params((32, 32, 3)):
        family = params["family"]
        assert family in ("cnn", "transfer")
        assert all(name == "family" or name.startswith(f"{family}/") for name in params)
        candidate = space.build(optuna.trial.FixedTrial(params), (32, 32, 3), 10)
        assert candidate.model.inputs[0].dtype == "uint8" and candidate.model.output_shape == (None, 10)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(6):
        trial = study.ask()
        family = trial.suggest_categorical("family", space.choice)
        if family != "autokeras":  # AutoKeras samples while it trains: tests/test_autokeras.py
            space.build(trial, (32, 32, 3), 10)
        assert all(name == "family" or name.startswith(f"{family}/") for name in trial.params), trial.params
        study.tell(trial, 0.5)
    assert space.settings()["families"] == "cnn,transfer,autokeras"  # recorded with the study


def test_a_backbone_without_weights_is_never_in_the_choice(shared_weights, tmp_path):
    space = get_space("auto", weights_dir=str(shared_weights))
    assert space.transfer.choice == ["mobilenet_0.25"] and space.backbones == "mobilenet_0.25"
    assert "transfer" in space.choice
    empty = tmp_path / "no-weights"
    empty.mkdir()
    space = get_space("auto", weights_dir=str(empty))
    assert space.choice == ["cnn", "autokeras"]
    assert any(note.startswith("family left out, transfer: no backbone") for note in space.check_ready())


def test_the_features_are_computed_once_and_again_only_when_weights_resolution_or_data_change(
        shared_weights, tmp_path, monkeypatch, digits):
    calls = []
    extractor = features.extractor

    def counted(*args):
        calls.append(args)
        return extractor(*args)

    monkeypatch.setattr(features, "extractor", counted)
    monkeypatch.setattr(features, "_MEMORY", {})
    weights = tmp_path / "weights"
    shutil.copytree(shared_weights, weights)
    cache = tmp_path / "digits-cache"
    cache.mkdir()
    few = dataclasses.replace(digits, x_train=digits.x_train[:40], y_train=digits.y_train[:40], x_val=digits.x_val[:20],
                              y_val=digits.y_val[:20], cache=cache)

    def kept(resolution=96, data=few, flipped=False):
        return features.frozen_features("mobilenet_0.25", "imagenet", str(weights), resolution, data, flipped)

    def to_compute(flipped):  # what a trial's preparation is foreseen from (Candidate.preparation_seconds)
        return features.images_to_compute("mobilenet_0.25", "imagenet", str(weights), 96, few, flipped)

    assert to_compute(flipped=True) == 40 + 20 + 40
    first = kept()
    assert first.train.shape == (40, 256) and first.train_flipped is None and first.val.shape == (20, 256)
    assert to_compute(flipped=False) == 0 and to_compute(flipped=True) == 40
    flipped = kept(flipped=True)  # the flipped images' features only once a trial flips
    assert flipped.train is first.train and flipped.train_flipped.shape == (40, 256) and len(calls) == 2
    assert to_compute(flipped=True) == 0
    assert not np.allclose(first.train, flipped.train_flipped)
    assert kept(flipped=True).train_flipped is flipped.train_flipped and len(calls) == 2  # from memory
    monkeypatch.setattr(features, "_MEMORY", {})
    again = kept(flipped=True)
    assert np.array_equal(again.train, first.train) and np.array_equal(again.train_flipped, flipped.train_flipped)
    assert len(calls) == 2 and len(list((cache / "features").iterdir())) == 2  # from the disk, beside the dataset cache
    kept(resolution=128)
    assert len(calls) == 3  # another resolution
    other = dataclasses.replace(few, cache=tmp_path / "other-dataset")
    (tmp_path / "other-dataset").mkdir()
    kept(data=other)
    assert len(calls) == 4  # another dataset
    weights_file = weights / "mobilenet_2_5_224_tf_no_top.h5"
    os.utime(weights_file, ns=(weights_file.stat().st_atime_ns, weights_file.stat().st_mtime_ns + 10**9))
    kept()
    assert len(calls) == 5  # the weights file was replaced


def test_a_trial_at_chance_level_is_stopped_at_its_first_check_whatever_the_pruner(tmp_path, digits):
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(digits, y_val=rng.permutation(digits.y_val))  # nothing to learn about these
    search = new_search(tmp_path, shuffled, "mlp", epochs=6, pruner=optuna.pruners.NopPruner())
    search.study.optimize(search.objective, n_trials=1)
    [trial] = search.study.trials
    assert trial.state.name == "PRUNED"
    assert trial.user_attrs[records.PRUNE_REASON_ATTR].startswith("at chance level after epoch 2: val_accuracy ")
    assert len(trial.intermediate_values) == 2  # stopped at the check, a third of its 6 epochs


def test_an_auto_search_runs_the_portfolio_across_families_resumes_and_records_its_families(
        runs_env, shared_weights, capsys):
    env = {**runs_env, "DATASET": "digits", "SPACE": "auto", "WEIGHTS_DIR": str(shared_weights), "EPOCHS": "2",
           "SEED": "0"}
    first = run_main(capsys, {**env, "TRIALS": "2"})
    assert first.returncode == 0, first.stderr[-3000:]
    assert "[trial 0] transfer backbone=" in first.stdout and "[trial 1] cnn " in first.stdout
    runs = Path(runs_env["RUNS_DIR"])
    storage = default_storage_url(runs / "optuna.db")
    study = optuna.load_study(study_name="digits-auto", storage=storage)
    recorded = study.user_attrs[records.SETTINGS_ATTR][records.SPACE_OPTIONS]
    assert recorded["families"] == "cnn,transfer,autokeras" and recorded["backbones"] == "mobilenet_0.25"
    resumed = run_main(capsys, {**env, "TRIALS": "3", "FAMILIES": "cnn,transfer,autokeras"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    refused = run_main(capsys, {**env, "TRIALS": "4", "FAMILIES": "cnn"})
    assert refused.returncode == 2 and "was created with FAMILIES=cnn,transfer,autokeras, not cnn" in refused.stderr
    study = optuna.load_study(study_name="digits-auto", storage=storage)
    assert len([t for t in study.trials if t.state.is_finished()]) == 3
    head, cnn = study.trials[:2]  # the head computed its backbone's features first: not its family's start-up
    assert records.STARTUP_SECONDS_ATTR not in head.user_attrs and records.STARTUP_SECONDS_ATTR in cnn.user_attrs
    for trial in study.trials:
        family = trial.params["family"]
        assert all(name == "family" or name.startswith(f"{family}/") for name in trial.params)
    info = json.loads((runs / "exports" / "digits-auto" / "model.json").read_text())
    assert info["params"]["family"] in ("cnn", "transfer", "autokeras")

    assert run_cli(runs_env, "report").returncode == 0  # the families side by side
    page = (runs / "report.html").read_text()
    table = page[page.index("<h3>Families side by side</h3>"):]
    table = table[:table.index("</table>")]
    families = {t.params["family"] for t in study.trials if t.state.is_finished()}
    assert {row.split("</td>")[0] for row in table.split("<tr><td>")[1:]} == families
    transfer = [t for t in study.trials if t.params["family"] == "transfer" and t.state.name == "COMPLETE"]
    assert f"data-field='family_best'>{max(t.value for t in transfer):.4f}<" in table


def test_the_portfolio_puts_the_transfer_head_first_only_where_weights_load(shared_weights, tmp_path):
    with_weights = get_space("auto", weights_dir=str(shared_weights)).initial_params((32, 32, 3))
    assert [p["family"] for p in with_weights] == ["transfer", "cnn", "cnn"]
    assert with_weights[0] == prefixed("transfer", get_space("transfer", weights_dir=str(shared_weights))
                                       .initial_params((32, 32, 3))[0])
    empty = tmp_path / "none-here"
    empty.mkdir()
    without = get_space("auto", weights_dir=str(empty)).initial_params((32, 32, 3))
    assert without == [prefixed("cnn", p) for p in get_space("cnn").initial_params((32, 32, 3))]  # the cnn space's start


@pytest.mark.parametrize("families, message", [("cnn,nope", "unknown family 'nope' in FAMILIES"),
                                               ("", "FAMILIES")])
def test_bad_families_are_one_line(runs_env, families, message):
    result = run_cli({**runs_env, "DATASET": "digits", "SPACE": "auto", "FAMILIES": families or " "})
    assert result.returncode == 2 and message in result.stderr


def test_a_transfer_trial_trains_its_head_on_kept_features_then_finetunes_and_leaves_one_image_model(
        tmp_path, digits, shared_weights):
    import keras

    few = dataclasses.replace(digits, x_val=digits.x_val[:100], y_val=digits.y_val[:100])
    search = new_search(tmp_path, few, "transfer", epochs=6, pruner=optuna.pruners.NopPruner(),
                        weights_dir=str(shared_weights))
    space = search.objective.space
    recipe = {**space.initial_params(few.image_shape)[0], "resolution": 96, "learning_rate": 3e-3,
              "finetune_share": 0.5, "unfreeze_fraction": 0.1, "finetune_lr_factor": 0.1}
    search.study.enqueue_trial(recipe)
    search.study.optimize(search.objective, n_trials=1)
    [trial] = search.study.trials
    assert trial.state.name == "COMPLETE" and trial.value > 0.5, trial.user_attrs
    run = search.tracker.client.get_run(trial.user_attrs[records.RUN_ID_ATTR])
    phases = [m.value for m in search.tracker.client.get_metric_history(run.info.run_id, "phase")]
    assert phases == [1, 1, 1, 2, 2, 2]  # three epochs of the head on features, three fine-tuning on images
    _, path = search.checkpoint.best(search.study)
    model = keras.saving.load_model(path, compile=False)
    assert model.inputs[0].dtype == "uint8" and model.input_shape == (None, 8, 8, 1)
    predicted = model.predict(np.asarray(few.x_val), verbose=0).argmax(axis=1)
    assert float((predicted == few.y_val).mean()) == pytest.approx(trial.value, abs=0.011)


def _reader(pixel: int, name: str):
    """A two-class model on (8, 8, 1) uint8 images that reads one pixel of the first row: the
    brighter, the surer of class 1."""
    import keras

    inputs = keras.Input(shape=(8, 8, 1), dtype="uint8", name="image")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1 / 128.0, offset=-1.0)(inputs))
    dense = keras.layers.Dense(2, activation="softmax", name="probabilities")
    model = keras.Model(inputs, dense(x), name=name)
    weights = np.zeros((64, 2), dtype="float32")
    weights[pixel] = (-4.0, 4.0)
    dense.set_weights([weights, np.zeros(2, dtype="float32")])
    return model


def _pixels_dataset():
    """Four images, each model right on three of them, confidently; wrong on one, barely: their mean is right on all four."""
    from imgsearch.datasets import Dataset
    from imgsearch.datasets.arrays import NAME as ARRAYS

    x = np.zeros((4, 8, 8, 1), dtype=np.uint8)  # the first row's first two pixels are read, the rest is dark
    x[:, 0, :2, 0] = [[255, 255], [0, 0], [255, 100], [150, 0]]
    y = np.array([1, 0, 1, 0])
    return Dataset(ARRAYS, ["dark", "bright"], x, y, x.copy(), y.copy(), x.copy(), y.copy(), fingerprint="pixels")


def test_the_end_of_budget_ensemble_is_a_trial_that_exports_as_one_model_and_evaluates(tmp_path):
    from imgsearch.results.evaluate import evaluate_model
    from imgsearch.records import INFO_FILE
    from imgsearch.results.export import export_best
    from imgsearch.spaces import load_model

    data = _pixels_dataset()
    search = new_search(tmp_path, data, "auto", families="cnn", budget=60)
    assert search.budget.reserve == 10.0 and search.checkpoint.keep == 4  # kept for the step, and its members
    study = search.study
    search.checkpoint.folder.mkdir(parents=True)
    for pixel in (0, 1):  # two "trials" that completed at 0.75, their models kept
        study.add_trial(optuna.trial.create_trial(value=0.75))
        _reader(pixel, f"reads_{pixel}").save(search.checkpoint.path(pixel))
    assert [float(np.mean(np.argmax(_reader(p, "m").predict(data.x_val, verbose=0), -1) == data.y_val))
            for p in (0, 1)] == [0.75, 0.75]

    search.end_with_ensemble()
    step = study.trials[-1]
    assert step.state.name == "COMPLETE" and step.value == 1.0 and step.user_attrs[records.ENSEMBLE_OF_ATTR] == [0, 1]
    assert records.family_of(step) == "ensemble" and sum(step.user_attrs[records.ENSEMBLE_WEIGHTS_ATTR]) == 1.0

    out = tmp_path / "export"
    path = export_best(study, search.checkpoint, out, search.tracker, data, {"space": "auto"})
    info = json.loads((out / INFO_FILE).read_text())
    assert info["trial"] == step.number and [m["trial"] for m in info["ensemble_of"]] == [0, 1]
    assert [m["weight"] for m in info["ensemble_of"]] == step.user_attrs[records.ENSEMBLE_WEIGHTS_ATTR]
    assert info["model"].startswith("ensemble")
    model = load_model(path)
    assert model.predict(data.x_test, verbose=0).argmax(-1).tolist() == data.y_test.tolist()
    result, _ = evaluate_model(path, data, out)
    assert result["top1"] == 1.0


def test_an_ensemble_that_does_not_beat_the_best_model_is_pruned_and_says_why(tmp_path):
    data = _pixels_dataset()
    search = new_search(tmp_path, data, "auto", families="cnn", budget=60)
    search.checkpoint.folder.mkdir(parents=True)
    for number in (0, 1):  # the same model twice: their mean is no better
        search.study.add_trial(optuna.trial.create_trial(value=0.75))
        _reader(0, f"same_{number}").save(search.checkpoint.path(number))
    search.end_with_ensemble()
    step = search.study.trials[-1]
    assert step.state.name == "PRUNED"
    assert step.user_attrs[records.PRUNE_REASON_ATTR] == ("ensemble: no other kept model of 1 improves trial 0's "
                                                          "0.7500 on the validation split")


def test_a_trial_whose_family_starts_up_slower_than_the_time_left_is_pruned_before_it_trains():
    import time

    from imgsearch.trials.callbacks import EpochTimer, check_startup

    choices = ["cnn", "autokeras"]
    study = optuna.create_study(direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        value=0.5, params={"family": "autokeras"},
        distributions={"family": optuna.distributions.CategoricalDistribution(choices)},
        user_attrs={records.STARTUP_SECONDS_ATTR: 80.0}))
    deadline = time.monotonic() + 30
    for family, pruned in (("cnn", False), ("autokeras", True)):
        study.enqueue_trial({"family": family})
        trial = study.ask()
        trial.suggest_categorical("family", choices)
        if pruned:
            with pytest.raises(optuna.TrialPruned, match=r"cannot finish: trials like it took 80 s to their first "
                                                         r"batch, (29|30) s of the budget left"):
                check_startup(trial, EpochTimer(), deadline)
        else:
            check_startup(trial, EpochTimer(), deadline)  # no cnn trial has shown its start-up yet
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def test_the_family_is_chosen_from_what_each_family_has_shown():
    from imgsearch.trials.families import choose_family

    choices = ["cnn", "transfer", "autokeras"]
    shown = {"transfer": {"trials": 3, "epochs": 30, "seconds": 30.0, "best": 0.8},
             "cnn": {"trials": 2, "epochs": 12, "seconds": 80.0, "best": 0.6}}
    assert choose_family(shown, choices, pick=0) == "autokeras"  # never tried: tried first
    shown["autokeras"] = {"trials": 1, "epochs": 0, "seconds": 60.0, "best": None}  # too slow to finish an epoch
    assert choose_family(shown, choices, pick=1) == "transfer"  # the leader, until it has 3/4 of the seconds
    shown["transfer"]["seconds"] = 240.0
    assert choose_family(shown, choices, pick=0) == "transfer"  # cnn took a quarter: still the leader's
    shown["transfer"]["seconds"] = 250.0
    assert choose_family(shown, choices, pick=1) == "cnn"  # now another's turn; autokeras is out
    nothing = {f: {"trials": 1, "epochs": 0, "seconds": 1.0, "best": None} for f in choices}
    assert choose_family(nothing, choices, pick=1) in choices  # none trained: all stay in


def test_an_auto_study_chooses_families_with_the_family_sampler_and_keeps_the_portfolio(tmp_path):
    from imgsearch.trials.families import FamilySampler
    from imgsearch.storage.optuna_storage import open_storage
    from imgsearch.trials.study import open_study

    settings = {"dataset": "digits", "space": "auto", "sampler": "tpe", "pruner": "hyperband", "epochs": 15, "seed": 0}
    study = open_study(open_storage(default_storage_url(tmp_path / "optuna.db")), "s", settings, exists=False)
    assert isinstance(study.sampler, FamilySampler)
    distribution = optuna.distributions.CategoricalDistribution(["autokeras", "transfer", "cnn"])
    study.enqueue_trial({"family": "cnn"})
    trial = study.ask({"family": distribution})
    assert trial.params["family"] == "cnn"  # queued by the portfolio: kept
    trial.report(0.5, 0)
    trial.should_prune()  # Hyperband sets up its brackets on its first call
    study.tell(trial, 0.5)
    for family in ("autokeras", "transfer"):  # never tried: tried first, in order; both fail at once
        trial = study.ask({"family": distribution, f"{family}/x": optuna.distributions.FloatDistribution(0, 1)})
        assert trial.params["family"] == family
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    # Hyperband shows a sampler only the trials of a trial's bracket (two brackets at 15 epochs);
    # the family is chosen from the whole study, where cnn is the only family that trained.
    chosen = [study.ask({"family": distribution}) for _ in range(10)]
    assert [t.params["family"] for t in chosen] == ["cnn"] * 10

def test_a_trial_of_a_family_that_does_not_lead_trains_on_a_quarter_of_the_time_left():
    from imgsearch.trials.families import share_deadline

    distribution = optuna.distributions.CategoricalDistribution(["cnn", "transfer", "autokeras"])
    study = optuna.create_study(direction="maximize")
    for family, value in (("cnn", 0.6), ("transfer", 0.8)):
        study.add_trial(optuna.trial.create_trial(value=value, params={"family": family},
                                                  distributions={"family": distribution},
                                                  intermediate_values={0: value}))
    for family, deadline in (("autokeras", 100.0 + 0.25 * 400), ("cnn", 100.0 + 0.25 * 400), ("transfer", None)):
        study.enqueue_trial({"family": family})
        trial = study.ask({"family": distribution})
        assert share_deadline(trial, "family", deadline=500.0, now=100.0) == deadline
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
