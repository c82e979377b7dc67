"""Bound a search process's memory: after N trials it starts afresh and resumes the study.

TensorFlow keeps memory from every model a process has trained, even after
``keras.backend.clear_session()`` and garbage collection (benchmarks/overhead.py measures
it). A new process gives it back, and since the study lives in its database the new process
simply carries on where the old one stopped.
"""

from __future__ import annotations

import optuna


class RestartProcess(Exception):
    """This process has run its share of trials; the search continues in a fresh one.

    ``budget_left`` is what remains of BUDGET (None when there is none), ``budget_total`` what
    the search began with.
    """

    def __init__(self, budget_left: float | None, budget_total: float | None = None):
        super().__init__(budget_left)
        self.budget_left, self.budget_total = budget_left, budget_total


class TrialsPerProcess:
    """Study callback that stops the study after ``limit`` trials in this process (0: never)."""

    def __init__(self, limit: int):
        self.limit, self.count = limit, 0

    @property
    def exhausted(self) -> bool:
        return bool(self.limit) and self.count >= self.limit

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.count += 1
        if self.exhausted:
            study.stop()
