"""AutoKeras's ImageClassifier search space, with Optuna sampling its hyperparameters.

AutoKeras builds its models through a KerasTuner tuner, and KerasTuner's search algorithms
are Oracles that fill each trial's hyperparameter values. ``OptunaTuner`` is an AutoKeras
tuner whose Oracle takes every value from the current Optuna trial, under AutoKeras's own
names (``image_block_1/block_type``), so the Optuna study is the search's only state:
one Optuna trial runs one AutoKeras trial in a scratch folder that is deleted afterwards.
"""

from __future__ import annotations

import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import ClassVar

import keras
import keras_tuner
import optuna
from keras_tuner.engine import hyperparameters as hp_types
from keras_tuner.engine import trial as kt_trial

from imgsearch.spaces.base import Candidate, SearchSpace

BATCH_SIZE = 32  # AutoKeras's own default; its image classifier does not tune it
WEIGHTS_HOST = "https://storage.googleapis.com/"  # where keras.applications downloads weights from


def suggest(trial: optuna.Trial, hp: keras_tuner.engine.hyperparameters.HyperParameter,
            fixed: dict | None = None) -> object:
    """The value of KerasTuner hyperparameter ``hp``, sampled by Optuna under the same name.

    Choice and Boolean become categorical, Int and Float keep their range, step and log
    sampling, and Fixed is a categorical of one value (so it is recorded with the rest).
    ``fixed`` pins hyperparameters by their last name part (``{"pretrained": False}``
    pins every block's ``.../pretrained``) to a one-value categorical.
    """
    short = hp.name.rsplit("/", 1)[-1]
    if fixed and short in fixed:
        return trial.suggest_categorical(hp.name, [fixed[short]])
    if isinstance(hp, hp_types.Fixed):
        return trial.suggest_categorical(hp.name, [hp.value])
    if isinstance(hp, hp_types.Boolean):
        return trial.suggest_categorical(hp.name, [False, True])
    if isinstance(hp, hp_types.Choice):
        return trial.suggest_categorical(hp.name, list(hp.values))
    if isinstance(hp, hp_types.Int):
        log = hp.sampling == "log"
        return trial.suggest_int(hp.name, hp.min_value, hp.max_value, step=1 if log else hp.step or 1, log=log)
    if isinstance(hp, hp_types.Float):
        log = hp.sampling == "log"
        return trial.suggest_float(hp.name, hp.min_value, hp.max_value, step=None if log else hp.step, log=log)
    raise TypeError(f"no Optuna mapping for KerasTuner {type(hp).__name__} {hp.name!r}")


class OptunaHyperParameters(keras_tuner.HyperParameters):
    """A trial's hyperparameters: one the model registers while it is built is sampled by Optuna.

    KerasTuner would give such a late hyperparameter (a branch taken for the first time,
    say the augmentation block's) its default value.
    """

    optuna_trial: optuna.Trial | None = None
    fixed: dict | None = None

    def _register(self, hyperparameter, overwrite=False):
        value = super()._register(hyperparameter, overwrite)
        if value is not None and self.optuna_trial is not None:
            value = self.values[hyperparameter.name] = suggest(self.optuna_trial, hyperparameter, self.fixed)
        return value


class OptunaOracle(keras_tuner.Oracle):
    """A KerasTuner Oracle that fills a trial's active hyperparameters from ``optuna_trial``
    (``fixed`` as for ``suggest``)."""

    def __init__(self, optuna_trial: optuna.Trial, fixed: dict | None = None, **kwargs):
        super().__init__(**kwargs)
        self.optuna_trial, self.fixed = optuna_trial, fixed

    def populate_space(self, trial_id):
        values = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:  # in registration order, so parents come first
            values.merge([hp])
            if values.is_active(hp):
                values.values[hp.name] = suggest(self.optuna_trial, hp, self.fixed)
        return {"status": kt_trial.TrialStatus.RUNNING, "values": values.values}

    def _bound(self, hps: keras_tuner.HyperParameters) -> OptunaHyperParameters:
        bound = OptunaHyperParameters.from_config(hps.get_config())
        bound.optuna_trial, bound.fixed = self.optuna_trial, self.fixed
        return bound

    def get_space(self):
        # AutoKeras builds a model from this before its first trial, to learn the space.
        # Bound to the Optuna trial, that model is the trial's own: with KerasTuner's
        # defaults it would be a ResNet50 every time, and fail any MAX_MODEL_SIZE below it.
        return self._bound(super().get_space())

    def create_trial(self, tuner_id):
        trial = super().create_trial(tuner_id)
        trial.hyperparameters = self._bound(trial.hyperparameters)
        return trial


@dataclass
class AutoKerasCandidate(Candidate):
    """No model until AutoKeras builds it in ``AutoKerasSpace.fit``, for ``num_classes`` classes."""

    num_classes: int = field(kw_only=True)


def _tuner_class():
    """``OptunaTuner``, defined on first use: importing AutoKeras costs seconds and most searches never need it."""
    from autokeras.engine import tuner as ak_tuner

    class OptunaTuner(ak_tuner.AutoTuner):
        """The AutoKeras tuner that ``ak.ImageClassifier(tuner=OptunaTuner, optuna_trial=trial)`` runs."""

        def __init__(self, hypermodel, optuna_trial, fixed=None, objective="val_loss", max_trials=1, seed=None,
                     **kwargs):
            oracle = OptunaOracle(optuna_trial, fixed, objective=objective, max_trials=max_trials, seed=seed)
            super().__init__(oracle, hypermodel, **kwargs)

        def _try_run_and_update_trial(self, trial, *fit_args, **fit_kwargs):
            # KerasTuner records a failing trial's traceback as text and goes on to its next
            # trial. Here the Optuna trial is the only one: its real exception (or the pruning
            # of our callbacks) goes to our Objective.
            self._run_and_update_trial(trial, *fit_args, **fit_kwargs)
            trial.status = kt_trial.TrialStatus.COMPLETED

    return OptunaTuner


@dataclass(kw_only=True)
class AutoKerasSpace(SearchSpace):
    """AutoKeras's ImageClassifier: ImageBlock (vanilla / resnet / xception / efficient), its
    normalisation and augmentation, classification head, optimizer and learning rate.

    ``max_model_size`` (parameters) makes AutoKeras reject larger models before training.
    ``pretrained="no"`` pins every block's ``pretrained`` to False: AutoKeras's pretrained
    blocks download ImageNet weights through Keras, which fails offline.
    """

    max_model_size: int | None
    pretrained: str
    #: Set by ``check_ready`` when Keras cannot download weights here: pretrained blocks are left out.
    offline: ClassVar[bool] = False

    @property
    def fixed(self) -> dict:
        return {"pretrained": False} if self.pretrained == "no" or self.offline else {}

    def check_ready(self) -> list[str]:
        """With pretrained blocks allowed, whether Keras can download their weights; when it cannot,
        they are left out of this process's trials (nothing is sampled that cannot run here)."""
        if self.pretrained == "no":
            return []
        try:
            urllib.request.urlopen(WEIGHTS_HOST, timeout=10).close()
        except urllib.error.HTTPError:
            pass  # the host answered
        except (urllib.error.URLError, OSError) as exc:
            self.offline = True
            return [f"Keras cannot reach {WEIGHTS_HOST} ({getattr(exc, 'reason', exc)}) to download the weights of "
                    "AutoKeras's pretrained blocks: they are left out here (as with PRETRAINED=no)"]
        return []

    def initial_params(self, image_shape, scale=None) -> list[dict]:
        """AutoKeras's own starting points for image classification (``task_specific.IMAGE_CLASSIFIER``),
        less those with pretrained blocks when they are left out."""
        from autokeras.tuners import task_specific

        configs = [dict(config) for config in task_specific.IMAGE_CLASSIFIER]
        if self.fixed:
            configs = [c for c in configs if not any(k.endswith("/pretrained") and v for k, v in c.items())]
        return configs

    def build(self, trial, image_shape, num_classes) -> Candidate:
        return AutoKerasCandidate(None, BATCH_SIZE, num_classes=num_classes)

    def fit(self, trial, candidate, *, x, y, batch_size, epochs, validation_data, callbacks, verbose,
            initial_epoch=0) -> keras.Model:
        """AutoKeras's ImageClassifier builds the model from ``trial`` (through OptunaTuner) and trains it."""
        import autokeras as ak

        with tempfile.TemporaryDirectory(prefix="autokeras-") as scratch:
            classifier = ak.ImageClassifier(
                num_classes=candidate.num_classes, tuner=_tuner_class(), optuna_trial=trial, fixed=self.fixed,
                max_trials=1, directory=scratch, overwrite=True, max_model_size=self.max_model_size,
            )
            try:
                classifier.fit(x, y, batch_size=batch_size, epochs=epochs, validation_data=validation_data,
                               callbacks=callbacks, verbose=verbose)
            except keras_tuner.errors.FailedTrialError as exc:  # KerasTuner's max_model_size check
                raise optuna.TrialPruned(f"too large: {exc}") from None
            return classifier.export_model()
