"""Every space builds valid, trainable models for many sampled configurations."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from imgsearch.storage.errors import UserError
from imgsearch.trials.study import get_space
from imgsearch.spaces import SPACES

optuna.logging.set_verbosity(optuna.logging.WARNING)

# Options that keep a space offline and light here (the zoo has its own tests in test_finetune.py).
TEST_OPTIONS = {"finetune": {"weights": "none", "backbones": "mobilenet_0.25,mobilenet_v3_small"},
                "transfer": {"weights": "none", "backbones": "mobilenet_0.25,mobilenet_v3_small"},
                "auto": {"weights": "none", "backbones": "mobilenet_0.25", "families": "cnn,transfer"}}
# Spaces whose build returns the model (autokeras builds it while it fits: tests/test_autokeras.py).
BUILDING_SPACES = sorted(set(SPACES) - {"autokeras"})


@pytest.mark.parametrize("space_name", BUILDING_SPACES)
@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_space_builds_valid_models(space_name, shape):
    import keras

    space = get_space(space_name, **TEST_OPTIONS.get(space_name, {}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(6 if space_name in ("finetune", "transfer") else 8):  # real backbones: slower
        trial = study.ask()
        candidate = space.build(trial, shape, 7)
        model = candidate.model
        assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape[1:]) == shape
        assert tuple(model.outputs[0].shape) == (None, 7)
        prefix = f"{trial.params['family']}/" if space_name == "auto" else ""  # auto names params after the family
        assert candidate.batch_size == trial.params[f"{prefix}batch_size"]
        seen.add(tuple(sorted(trial.params)))
        study.tell(trial, 0.5)
        keras.backend.clear_session()
    assert len(seen) > 1, "conditional params never changed the sampled set"


def test_conditional_params_only_where_they_apply():
    """The learning rate and weight decay are sampled under their optimizer's name, over its range."""
    space = get_space("cnn")
    for optimizer in ("sgd", "adamw"):
        trial = optuna.trial.FixedTrial({
            **space.initial_params((8, 8, 1))[0], "optimizer": optimizer,
            f"{optimizer}_learning_rate": 1e-3 if optimizer == "adamw" else 0.1, f"{optimizer}_weight_decay": 1e-3,
        })
        space.build(trial, (8, 8, 1), 3)
        assert {k for k in trial.params if k.endswith(("_learning_rate", "_weight_decay"))} == {
            f"{optimizer}_learning_rate", f"{optimizer}_weight_decay"}


@pytest.mark.parametrize("family", ["plain", "residual"])
def test_both_families_build_the_stages_they_say(family):
    """A residual stage adds identity shortcuts; a plain one has none; each stage halves the resolution."""
    import keras

    params = {**get_space("cnn").initial_params((32, 32, 3))[0], "family": family, "conv_blocks": 3,
              "convs_per_block": 2, "filters": 16}
    model = get_space("cnn").build(optuna.trial.FixedTrial(params), (32, 32, 3), 10).model
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert len(adds) == (6 if family == "residual" else 0)  # 3 stages x 2 units
    assert [tuple(p.output.shape[1:3]) for p in pools] == [(16, 16), (8, 8), (4, 4)]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs[-1].filters == 64  # 16, doubled per stage
    assert all(any(isinstance(other, keras.layers.BatchNormalization) for other in model.layers
                   if other.name == conv.name.replace("_conv", "_bn")) for conv in convs)


def test_sampled_model_trains_and_takes_raw_uint8():
    space = get_space("cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    candidate = space.build(study.ask(), (16, 16, 3), 3)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (32, 16, 16, 3), dtype=np.uint8)
    y = np.arange(32) % 3
    history = candidate.model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    probabilities = candidate.model.predict(x[:4], verbose=0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-4)


def test_fixed_trial_replays_the_same_architecture():
    """trial.params + the space's settings rebuild the model: same layers, same parameter count."""
    space = get_space("cnn")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=5))
    trial = study.ask()
    original = space.build(trial, (32, 32, 3), 10).model
    replay = get_space("cnn", **space.settings()).build(optuna.trial.FixedTrial(trial.params), (32, 32, 3), 10).model
    assert replay.count_params() == original.count_params()
    assert [type(layer).__name__ for layer in replay.layers] == [type(layer).__name__ for layer in original.layers]


def test_label_smoothing_loss_matches_keras_categorical():
    import keras

    from imgsearch.spaces.common import SparseCrossentropyWithSmoothing

    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    y_true = np.array([0, 2])
    ours = SparseCrossentropyWithSmoothing(0.1)(y_true, y_pred)
    reference = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[y_true], y_pred)
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-5)


def test_unknown_space_and_too_small_images():
    with pytest.raises(UserError, match="unknown SPACE 'resnet'"):
        get_space("resnet")
    with pytest.raises(UserError, match="IMAGE_SIZE=4 is below 8"):
        get_space("cnn").check_image_size((4, 4, 3), "cnn")


@pytest.mark.parametrize("space_name", BUILDING_SPACES)
@pytest.mark.parametrize("shape", [(8, 8, 1), (64, 64, 3)])
def test_initial_params_are_complete_and_in_range(space_name, shape):
    """Queued starting points build without sampling anything and without range warnings."""
    import warnings

    space = get_space(space_name, **TEST_OPTIONS.get(space_name, {}))
    for params in space.initial_params(shape):
        study = optuna.create_study()
        study.enqueue_trial(params)
        trial = study.ask()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # Optuna warns on out-of-range fixed params
            space.build(trial, shape, 5)
        assert trial.params == params
