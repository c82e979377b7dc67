"""The trial engine: a search process's loop (``engine.py``), one trial (``objective.py``, ``training.py``, ``callbacks.py``),
the study's sampler and pruner, the budget, the TRIALS target, stale trials, signals and process restarts."""
