"""A search's trials: a search process's loop (``engine.py``), one trial (``objective.py``,
``training.py``, ``callbacks.py``), its MLflow run, notes and checkpoint (``tracking.py``,
``trial_notes.py``, ``checkpoints.py``), the study's sampler and pruner, the budget, the TRIALS
target, stale trials, signals and process restarts."""
