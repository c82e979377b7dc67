"""Keep the model of the study's best trial so far (and, for an ensemble at the end, a few more)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import optuna

from imgsearch.ranking import best_trial, ranked
from imgsearch.records import family_of
from imgsearch.storage.errors import UserError
from imgsearch.storage.files import remove_leftovers, write_atomic

if TYPE_CHECKING:
    import keras


class BestCheckpoint:
    """``folder/trial-<n>.keras`` for the best complete trial, and with ``keep_for_ensemble`` for
    the models an ensemble may be made of: the ``keep`` best complete trials and each family's best.

    A trial saves its model only when it would be kept among the complete trials so far; other
    files are deleted only after the new one is recorded as complete in the study (the
    ``after_trial`` callback), so a crash never leaves the study without its best model.
    Files of trials still running (in other workers) are left to their own trial's end.
    """

    def __init__(self, folder: Path, keep: int = 1):
        self.folder, self.keep = folder, keep
        remove_leftovers(folder)  # half-saved models of killed processes

    def keep_for_ensemble(self, members: int) -> None:
        """Keep the ``members`` best trials' models and each family's best, not only the best."""
        self.keep = max(self.keep, members)

    def path(self, trial_number: int) -> Path:
        return self.folder / f"trial-{trial_number}.keras"

    def kept(self, study: optuna.Study, extra: tuple[optuna.trial.FrozenTrial, ...] = ()) -> list:
        """The complete trials (and ``extra``, a trial about to complete) whose models are kept, best first."""
        complete = [*study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)), *extra]
        order = ranked(complete)
        if self.keep == 1:
            return order[:1]
        families = {}
        for trial in order:
            families.setdefault(family_of(trial), trial)
        return [t for i, t in enumerate(order) if i < self.keep or families[family_of(t)] is t]

    def offer(self, trial: optuna.Trial, value: float, model: keras.Model) -> bool:
        """Save ``model`` if ``trial``, complete with ``value``, would be kept; return whether it was."""
        # What ``kept`` reads of a trial; not ``optuna.trial.create_trial``, which refuses a
        # portfolio's value outside the sampled range (Optuna only warns when a trial runs it).
        candidate = SimpleNamespace(number=trial.number, value=value, datetime_complete=None,
                                    state=optuna.trial.TrialState.COMPLETE,
                                    params=trial.params, user_attrs=trial.user_attrs)
        if not any(t is candidate for t in self.kept(trial.study, (candidate,))):
            return False
        write_atomic(self.path(trial.number), model.save)
        return True

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Study callback: once ``trial`` is recorded complete, drop the checkpoints no longer kept."""
        if trial.state != optuna.trial.TrialState.COMPLETE:
            return
        kept = {t.number for t in self.kept(study)}
        if trial.number not in kept:
            return
        for other in study.get_trials(deepcopy=False):
            if other.number not in kept and other.state.is_finished():
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
