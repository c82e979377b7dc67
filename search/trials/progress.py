"""One line per finished trial: its state and value, the best so far and the count."""

from __future__ import annotations

import sys
import time

import optuna

from imgsearch.results.checkpoints import best_trial
from imgsearch.trials.trial_target import finished_count
from imgsearch.records import FAIL_REASON_ATTR, PRUNE_REASON_ATTR, family_of
from imgsearch.storage.files import DISK_FULL


class Progress:
    """Study callback printing the search's progress; also stops the search after
    ``max_consecutive_failures`` failed trials in a row (``stopped_because`` says why)."""

    def __init__(self, target: int | None, max_consecutive_failures: int = 5, stream=None, budget=None):
        self.target, self.max_failures, self.stream = target, max_consecutive_failures, stream
        self.budget = budget
        self.started = time.perf_counter()
        self.failures_in_a_row = 0
        self.stopped_because: str | None = None

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        state = trial.state.name
        value = f"val_accuracy {trial.value:.4f}" if trial.value is not None else ""
        if trial.state == optuna.trial.TrialState.PRUNED:
            value = trial.user_attrs.get(PRUNE_REASON_ATTR, "")
        if trial.state == optuna.trial.TrialState.FAIL:
            value = trial.user_attrs.get(FAIL_REASON_ATTR, "")
        top = best_trial(study)
        best = (f"best {top.value:.4f} (trial {top.number}{', ' + family_of(top) if family_of(top) else ''})"
                if top else "no complete trial yet")
        elapsed = time.perf_counter() - self.started
        left = self.budget.left() if self.budget is not None else None
        clock = f"{elapsed:.0f}s" + (f", {max(0.0, left):.0f}s left" if left is not None else "")
        target = f"/{self.target}" if self.target is not None else ""
        family = f" ({family_of(trial)})" if family_of(trial) else ""  # SPACE=auto
        print(f"[trial {trial.number}]{family} {state:<8} {value}  | {best} | "
              f"{finished_count(study)}{target} done, {clock}",
              file=self.stream or sys.stdout, flush=True)  # stdout as it is now (tests replace it)
        self.failures_in_a_row = self.failures_in_a_row + 1 if state == "FAIL" else 0
        if state == "FAIL" and value.startswith(DISK_FULL):  # every trial would fail the same way
            self.stopped_because = value
            study.stop()
        elif self.failures_in_a_row >= self.max_failures:
            self.stopped_because = f"{self.failures_in_a_row} trials failed in a row, the last with: {value}"
            study.stop()
