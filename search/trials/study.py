"""The Optuna study: its recorded settings, sampler and pruner."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import optuna

from imgsearch.storage.errors import UserError
from imgsearch.records import OBJECTIVE, SETTINGS_ATTR, SPACE_OPTIONS
from imgsearch.settings import STUDY_KEYS, default, space_defaults
from imgsearch.trials.families import FamilySampler
from imgsearch.spaces import space_class

if TYPE_CHECKING:
    from imgsearch.spaces import SearchSpace


def _gp_sampler(seed: int | None) -> optuna.samplers.BaseSampler:
    try:
        import torch  # noqa: F401  (GPSampler needs it)
    except ImportError:
        raise UserError("SAMPLER=gp needs PyTorch: pip install '.[gp]' (or torch) first") from None
    return optuna.samplers.GPSampler(seed=seed)


# SAMPLER and PRUNER: each name's Optuna class (the names are search/choices.py's; tests/test_settings.py checks).
SAMPLERS = {
    "tpe": lambda seed: optuna.samplers.TPESampler(seed=seed),
    "random": lambda seed: optuna.samplers.RandomSampler(seed=seed),
    # CMA-ES handles the numeric params; categorical ones fall back to random sampling.
    "cmaes": lambda seed: optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False),
    "gp": _gp_sampler,
}
# Pruners act on the per-epoch validation accuracy; a step is one epoch. Hyperband's first rung
# is after a third of the epochs: before that a trial is still in its learning-rate warmup, and
# the measured curves cross (docs/defaults.md). With 15 epochs that is two
# brackets; the first judges a trial at step 5 (steps count epochs from 0).
PRUNERS = {
    "hyperband": lambda epochs: optuna.pruners.HyperbandPruner(min_resource=max(1, epochs // 3), max_resource=epochs),
    "median": lambda epochs: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    "sha": lambda epochs: optuna.pruners.SuccessiveHalvingPruner(),
    "none": lambda epochs: optuna.pruners.NopPruner(),
}


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    if name not in SAMPLERS:  # a study recorded by another version of this tool
        raise UserError(f"unknown SAMPLER {name!r}; choose one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name](seed)


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    if name not in PRUNERS:
        raise UserError(f"unknown PRUNER {name!r}; choose one of: {', '.join(PRUNERS)}")
    return PRUNERS[name](epochs)


def resolve_settings(storage: optuna.storages.BaseStorage, study_name: str, given: dict) -> tuple[dict, bool]:
    """The study's settings and whether the study already exists.

    ``given`` holds only what the user set. A new study takes the defaults of the
    ``STUDY_KEYS`` settings (what a study is) updated with it; an existing one keeps what it
    recorded, and a given value that contradicts the record is a UserError (so a study
    never mixes trials of different settings).
    """
    try:
        existing = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        settings = {**{k: default(k) for k in STUDY_KEYS}, **{k: v for k, v in given.items() if k in STUDY_KEYS}}
        if not settings.get("dataset"):
            raise UserError("DATASET is required for a new study")
        return settings, False
    recorded = existing.user_attrs.get(SETTINGS_ATTR)
    if recorded is None:
        raise UserError(f"study {study_name!r} was not created by this tool (no recorded settings)")
    for key, value in given.items():
        if key in STUDY_KEYS and value is not None and value != recorded.get(key):
            raise _contradiction(study_name, key, recorded.get(key), value)
    return recorded, True


def resolve_space(settings: dict, given: dict, exists: bool, study_name: str) -> SearchSpace:
    """The study's search space, built from its recorded options and the ``given`` ones.

    ``given`` holds the space options the user set; the others take their defaults
    (search/settings.py). One the space does not have is a UserError. A new study records
    the space's settings in ``settings``; an existing one uses its record, takes location
    options (folders) from ``given``, and refuses a given option that would change the space.
    """
    name = settings["space"]
    known = space_defaults(name)
    for key in given:
        if key not in known:
            raise UserError(f"{key.upper()} does not apply to SPACE={name}")
    cls = space_class(name)
    defaults = space_defaults(name)
    if not exists:
        space = cls(**{**defaults, **given})
        settings[SPACE_OPTIONS] = space.settings()
        return space
    recorded = {**defaults, **(settings.get(SPACE_OPTIONS) or {})}  # older studies recorded fewer options
    space = cls(**{**recorded, **{k: v for k, v in given.items() if k in cls.location_options}})
    asked = cls(**{**recorded, **given}).settings()
    for key, value in asked.items():
        if value != recorded.get(key):
            raise _contradiction(study_name, key, recorded.get(key), value)
    return space


def _contradiction(study_name: str, key: str, recorded, given) -> UserError:
    """A given setting that would change what the study is (its record stays as it is)."""
    return UserError(f"study {study_name!r} was created with {key.upper()}={recorded}, not {given}; "
                     "drop the setting to join it, or pick a new STUDY name")


def run_params(settings: dict, space: SearchSpace) -> dict:
    """The study's settings and its space's, flat: what every trial's MLflow run logs as fixed params."""
    return {**{k: v for k, v in settings.items() if k != SPACE_OPTIONS}, **space.settings()}


def get_space(name: str, **options) -> SearchSpace:
    """The space registered as ``name`` with ``options``, the rest at their defaults."""
    return space_class(name)(**{**space_defaults(name), **options})


def open_study(storage: optuna.storages.BaseStorage, study_name: str, settings: dict, exists: bool) -> optuna.Study:
    """Create (recording ``settings``) or load the study, with its sampler and pruner.

    A space with a ``family_param`` (SPACE=auto) has its family chosen by ``FamilySampler``.
    With a SEED, the sampler of a resuming process is seeded with SEED + the number of
    trials so far: still reproducible, but it does not replay the random draws (and so
    the parameters) of the trials the study already has.
    """
    seed = settings["seed"]
    if seed is not None and exists:
        seed += storage.get_n_trials(storage.get_study_id_from_name(study_name))
    sampler = make_sampler(settings["sampler"], seed)
    family_param = space_class(settings["space"]).family_param
    if family_param:  # SPACE=auto: the family is chosen from what each family has shown
        sampler = FamilySampler(sampler, family_param, seed)
    pruner = make_pruner(settings["pruner"], settings["epochs"])
    study = optuna.create_study(
        study_name=study_name, storage=storage, sampler=sampler, pruner=pruner,
        direction="maximize", load_if_exists=True,
    )
    if not exists:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, only names the dashboard's axis
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([OBJECTIVE])
        study.set_user_attr(SETTINGS_ATTR, settings)
    return study
