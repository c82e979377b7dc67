"""Where things live, the bottom layer: ``search`` and ``spaces`` import it, it imports neither.

``errors`` (the one-line UserError), ``urls`` (storage URLs, their checks, password masking),
``optuna_storage`` and ``reconnect`` (Optuna storages that ride out a lost database),
``layout`` (the runs folder), ``mlflow_store`` (its MLflow store), ``files`` (writing files
whole, a full disk, leftovers, locks, scratch folders), ``machine`` (live processes, available
memory, a child that dies with its parent), ``compat`` (the libraries' private names). Nothing
is imported here, so ``storage.errors`` and ``storage.urls`` stay cheap for the checks that run
before anything heavy.
"""

# Seconds a lost study database is retried before the command stops: DB_RETRY's default
# (search/settings.py reads it from here, and so does ``open_storage`` when not given one).
DB_RETRY_SECONDS = 60.0
