"""One line per finished trial: what model it was, how it ended, the best so far and the count."""

from __future__ import annotations

import os
import sys
import time

import optuna

from imgsearch.records import (DEADLINE_ATTR, FAIL_REASON_ATTR, LOCAL_WORKER, PLANNED_EPOCHS_ATTR, PRUNE_REASON_ATTR,
                               family_of)
from imgsearch.results.checkpoints import best_trial
from imgsearch.results.leaderboard import key_params
from imgsearch.storage.files import DISK_FULL
from imgsearch.trials.trial_target import finished_count


def worker_tag() -> str:
    """``[worker i] `` in a WORKERS=N search's worker process, else nothing."""
    index = os.environ.get(LOCAL_WORKER)
    return f"[worker {index}] " if index else ""


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def how_it_ended(trial: optuna.trial.FrozenTrial) -> str:
    """Complete (with its epochs, cut or stopped at the deadline), pruned (why), or failed (why)."""
    attrs, epochs = trial.user_attrs, len(trial.intermediate_values)
    if trial.state == optuna.trial.TrialState.COMPLETE:
        if attrs.get(DEADLINE_ATTR):
            how = f"stopped at the deadline after epoch {attrs[DEADLINE_ATTR]}"
        elif attrs.get(PLANNED_EPOCHS_ATTR):
            how = f"{plural(epochs, 'epoch')}, cut to fit the budget"
        else:
            how = plural(epochs, "epoch")
        return f"complete: val_accuracy {trial.value:.4f} ({how})"
    if trial.state == optuna.trial.TrialState.PRUNED:
        return f"pruned: {attrs.get(PRUNE_REASON_ATTR) or 'by the pruner'}"
    return f"failed: {attrs.get(FAIL_REASON_ATTR) or 'no reason recorded'}"


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
        reason = trial.user_attrs.get(FAIL_REASON_ATTR, "")
        self.failures_in_a_row = self.failures_in_a_row + 1 if state == "FAIL" else 0
        if state == "FAIL" and reason.startswith(DISK_FULL):  # every trial would fail the same way
            self.stopped_because = reason
            study.stop()
        elif self.failures_in_a_row >= self.max_failures:
            self.stopped_because = f"{self.failures_in_a_row} trials failed in a row, the last with: {reason}"
            study.stop()
