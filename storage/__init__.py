"""Where things live, the bottom layer: ``search`` and ``spaces`` import it, it imports neither.

``errors`` (the one-line UserError), ``urls`` (storage URLs, their checks, password masking),
``optuna_storage`` and ``reconnect`` (Optuna storages that ride out a lost database),
``layout`` (the runs folder), ``mlflow_store`` (its MLflow store), ``files`` (writing files
whole, a full disk, leftovers, locks, scratch folders), ``machine`` (live processes, available
memory, a child that dies with its parent). Nothing is imported here, so ``storage.errors`` and
``storage.urls`` stay cheap for the checks that run before anything heavy.
"""
