"""One line per finished trial: what model it was, how it ended, the best so far and the count;
and the stop when trials keep failing."""

from __future__ import annotations

import os
import sys
import time

import optuna

from imgsearch.ranking import best_trial
from imgsearch.records import FAIL_REASON_ATTR, LOCAL_WORKER, family_of
from imgsearch.trials.describe import how_it_ended, key_params
from imgsearch.storage.files import DISK_FULL
from imgsearch.trials.trial_target import finished_count


def worker_tag() -> str:
    """``[worker i] `` in a WORKERS=N search's worker process, else nothing."""
    index = os.environ.get(LOCAL_WORKER)
    return f"[worker {index}] " if index else ""


class Progress:
    """Study callback printing one line per finished trial: the model, how it ended, the best so
    far, the count against ``target`` and the time (left of ``budget``)."""

    def __init__(self, target: int | None, stream=None, budget=None):
        self.target, self.stream, self.budget = target, stream, budget
        self.started = time.perf_counter()

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        top = best_trial(study)
        best = (f"best {top.value:.4f} (trial {top.number}{', ' + family_of(top) if family_of(top) else ''})"
                if top else "no complete trial yet")
        elapsed = time.perf_counter() - self.started
        left = self.budget.left() if self.budget is not None else None
        clock = f"{elapsed:.0f}s" + (f", {max(0.0, left):.0f}s left" if left is not None else "")
        target = f"/{self.target}" if self.target is not None else ""
        model = " ".join(part for part in (family_of(trial), key_params(trial)) if part)
        print(f"{worker_tag()}[trial {trial.number}] {model + ': ' if model else ''}{how_it_ended(trial)} "
              f"| {best} | {finished_count(study)}{target} done, {clock}",
              file=self.stream or sys.stdout, flush=True)  # stdout as it is now (tests replace it)


class StopWhenFailing:
    """Study callback: stops the search after ``max_in_a_row`` failed trials in a row, or at
    once on a full disk (every trial would fail the same way); ``stopped_because`` says why."""

    def __init__(self, max_in_a_row: int = 5):
        self.max_in_a_row, self.in_a_row = max_in_a_row, 0
        self.stopped_because: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        failed, reason = trial.state == optuna.trial.TrialState.FAIL, trial.user_attrs.get(FAIL_REASON_ATTR, "")
        self.in_a_row = self.in_a_row + 1 if failed else 0
        if failed and reason.startswith(DISK_FULL):
            self.stopped_because = reason
            study.stop()
        elif self.in_a_row >= self.max_in_a_row:
            self.stopped_because = f"{self.in_a_row} trials failed in a row, the last with: {reason}"
            study.stop()
