"""Each private name of a library that ``storage/compat.py`` gathers, checked against the installed
library: an upgrade that moves one fails here, naming the library and the name, rather than deep
inside a search."""

import inspect
from importlib.metadata import version

import optuna
import pytest

from imgsearch.storage import compat


@pytest.mark.parametrize("library", sorted(compat.WRITTEN_FOR))
def test_the_installed_libraries_are_the_versions_the_shims_were_written_for(library):
    written, installed = compat.WRITTEN_FOR[library], version(library)
    assert installed.startswith(written), f"{library} {installed} installed, the shims were written for {written}"


@pytest.mark.parametrize("name", sorted(compat.RDB_PRIVATE_CALLS))
def test_optunas_cache_calls_these_rdbstorage_methods_directly(name):
    from optuna.storages import _cached_storage

    assert callable(getattr(optuna.storages.RDBStorage, name, None)), f"optuna: RDBStorage.{name} is gone"
    source = inspect.getsource(_cached_storage._CachedStorage)
    assert f"self._backend.{name}(" in source, f"optuna: _CachedStorage no longer calls RDBStorage.{name}"


def test_the_ids_and_the_storage_behind_optunas_cache(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}")
    study = optuna.create_study(storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    frozen = study.trials[0]
    assert compat.storage_of(study) is storage
    assert storage.get_trial(compat.trial_id(frozen)).number == frozen.number
    assert storage.get_study_name_from_id(compat.study_id(study)) == study.study_name


@pytest.mark.parametrize("owner, hooks", sorted(compat.KERAS_TUNER_HOOKS.items()))
def test_the_keras_tuner_hooks_the_autokeras_space_overrides(owner, hooks):
    import keras_tuner

    expected = {"_register": ["self", "hyperparameter", "overwrite"],
                "_try_run_and_update_trial": ["self", "trial", "fit_args", "fit_kwargs"],
                "_run_and_update_trial": ["self", "trial", "fit_args", "fit_kwargs"]}
    for hook in hooks:
        method = getattr(getattr(keras_tuner, owner), hook, None)
        assert method is not None, f"keras-tuner: {owner}.{hook} is gone"
        assert list(inspect.signature(method).parameters) == expected[hook], f"keras-tuner: {owner}.{hook} changed"


def test_a_new_mlflow_store_is_a_copy_of_one_mlflow_made_at_its_schemas_head(tmp_path, monkeypatch):
    """storage/mlflow_store.py seeds a new RUNS_DIR's store from an empty one MLflow made: it must
    be what MLflow makes itself (same tables, same schema version), and open without migrating."""
    import sqlite3

    from mlflow.tracking import MlflowClient

    from imgsearch.storage.layout import RunsLayout
    from imgsearch.storage.mlflow_store import local_tracking_uri

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    (tmp_path / "runs").mkdir()
    uri = local_tracking_uri(RunsLayout(tmp_path / "runs"))
    assert (tmp_path / "cache" / "imgsearch" / f"mlflow-{version('mlflow')}.db").is_file()
    MlflowClient(f"sqlite:///{tmp_path / 'own.db'}").search_experiments()  # one MLflow makes itself

    def schema(path):  # each table's columns and constraints, in any order (MLflow's own stores differ in it)
        with sqlite3.connect(path) as db:
            tables = db.execute("SELECT name, sql FROM sqlite_master WHERE type IN ('table', 'index')").fetchall()
            lines = {name: sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()) for name, sql in tables}
            return db.execute("SELECT version_num FROM alembic_version").fetchall(), lines

    assert schema(tmp_path / "runs" / "mlflow.db") == schema(tmp_path / "own.db")
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("e"))
    assert client.get_run(run.info.run_id).info.status == "RUNNING"
