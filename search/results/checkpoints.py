"""Keep the model of the study's best trial so far, and only that one."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from storage.errors import UserError
from storage.files import remove_leftovers, write_atomic

if TYPE_CHECKING:
    import keras


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """The study's best complete trial (highest value), None before any completes.

    Among equal values it is the one that completed first: that is the trial whose model
    ``BestCheckpoint`` keeps. Optuna's ``study.best_trial`` leaves ties to the database's
    row order, so a later trial with an equal value could name a trial with no model.
    """
    return best_of(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def best_of(trials: list[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial | None:
    """``best_trial`` among ``trials`` (those not complete are left out)."""
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return None
    return min(complete, key=lambda t: (-t.value, t.datetime_complete or datetime.max, t.number))


class BestCheckpoint:
    """``folder/trial-<n>.keras`` for the best complete trial.

    A trial saves its model only when it beats every complete trial so far; older files
    are deleted only after the new best is recorded as complete in the study (the
    ``after_trial`` callback), so a crash never leaves the study without its best model.
    Files of trials still running (in other workers) are left to their own trial's end.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        remove_leftovers(folder)  # half-saved models of killed processes

    def path(self, trial_number: int) -> Path:
        return self.folder / f"trial-{trial_number}.keras"

    def offer(self, study: optuna.Study, trial_number: int, value: float, model: keras.Model) -> bool:
        """Save ``model`` if ``value`` beats the best complete trial; return whether it did."""
        best = best_trial(study)
        if best is not None and value <= best.value:
            return False
        write_atomic(self.path(trial_number), model.save)
        return True

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback: once ``trial`` is the recorded best, drop every other checkpoint."""
        if trial.state != optuna.trial.TrialState.COMPLETE or best_trial(study).number != trial.number:
            return
        for other in study.get_trials(deepcopy=False):
            if other.number != trial.number and other.state.is_finished():
                self.path(other.number).unlink(missing_ok=True)

    def best(self, study: optuna.Study) -> tuple[optuna.trial.FrozenTrial, Path]:
        """The best complete trial and its model file; UserError when there is none."""
        best = best_trial(study)
        if best is None:
            raise UserError(f"study {study.study_name!r} has no complete trial yet; run the search first")
        path = self.path(best.number)
        if not path.is_file():
            raise UserError(
                f"no saved model for trial {best.number}, the best of {study.study_name!r}, in {self.folder} "
                "(did that trial run with another RUNS_DIR or on another machine?)"
            )
        return best, path
