"""The private names of the libraries this project leans on, in one place, with the versions
they were written for: Optuna 5.0 and KerasTuner 1.4. ``tests/test_compat.py`` checks each
one against the installed library and fails, naming it, when an upgrade moves it.

Nothing here imports a library at import time (this is the bottom layer).
"""

from __future__ import annotations

WRITTEN_FOR = {"optuna": "5.0", "keras-tuner": "1.4"}

# Optuna's RDBStorage methods that reach the database and that Optuna's cache in front of it
# (``optuna.storages._CachedStorage``) calls directly, besides the public storage interface:
# ``storage/reconnect.py`` retries each of them when the database goes away.
RDB_PRIVATE_CALLS = frozenset({"_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials",
                               "_set_trial_param"})

# KerasTuner's hooks the AutoKeras space overrides (``spaces/autokeras_space.py``):
# ``HyperParameters._register`` (a hyperparameter met while the model is built) and
# ``Tuner._try_run_and_update_trial`` / ``_run_and_update_trial`` (one trial's run).
KERAS_TUNER_HOOKS = {"HyperParameters": ("_register",), "Tuner": ("_try_run_and_update_trial", "_run_and_update_trial")}


def trial_id(trial) -> int:
    """The storage's id of ``trial`` (a FrozenTrial or Trial): the storage API takes it, Optuna keeps it private."""
    return trial._trial_id


def study_id(study) -> int:
    """The storage's id of ``study`` (the dashboard's URLs use it)."""
    return study._study_id


def storage_of(study):
    """The storage ``study`` was opened with, behind Optuna's cache (our ``ReconnectingStorage``)."""
    storage = study._storage
    return getattr(storage, "_backend", storage)
