"""The Optuna objective: a trial builds a model from its space, trains it, and is tracked."""

from __future__ import annotations

import gc
import io
import traceback

import keras
import optuna

from search.checkpoints import BestCheckpoint
from search.datasets import Dataset
from search.progress import FAIL_REASON_ATTR, PRUNE_REASON_ATTR
from search.tracking import Tracker
from search.training import plan_epochs, train
from spaces import SearchSpace


def model_summary(model: keras.Model) -> str:
    out = io.StringIO()
    model.summary(print_fn=lambda line, **_: out.write(line + "\n"))
    return out.getvalue()


class Objective:
    """Callable for ``study.optimize``: returns a trial's best validation accuracy.

    Every trial gets an MLflow child run whose final state mirrors the Optuna state
    (complete, pruned, failed). ``seed`` (when set) seeds Keras per trial with
    ``seed + trial.number``. A trial whose epoch would take longer than ``max_epoch_seconds``
    is pruned. The Keras session is cleared after every trial, so memory
    does not grow with the number of trials.
    """

    def __init__(self, space: SearchSpace, data: Dataset, epochs: int, tracker: Tracker,
                 checkpoint: BestCheckpoint, fixed: dict, seed: int | None = None,
                 max_epoch_seconds: float | None = None):
        self.space, self.data, self.epochs = space, data, epochs
        self.tracker, self.checkpoint, self.fixed, self.seed = tracker, checkpoint, fixed, seed
        self.max_epoch_seconds = max_epoch_seconds

    def __call__(self, trial: optuna.Trial) -> float:
        if self.seed is not None:
            keras.utils.set_random_seed(self.seed + trial.number)
        run = self.tracker.trial_run(trial, self.fixed)
        try:
            candidate = self.space.build(trial, self.data.image_shape, self.data.num_classes)
            plan = plan_epochs(candidate.phases, self.epochs)
            epochs = {f"epochs_{phase.name}": n for phase, n in zip(candidate.phases, plan)} if len(plan) > 1 else {}
            run.log_params(trial.params, derived={**candidate.details, **epochs})
            if candidate.model is not None:
                run.log_model_info(candidate.model.count_params(), model_summary(candidate.model))
            value = train(candidate, plan, self.data, trial, run, self.max_epoch_seconds)
            if candidate.fit is not None:  # the space's library built the model while fitting
                run.log_model_info(candidate.model.count_params(), model_summary(candidate.model))
            if self.checkpoint.offer(trial.study, trial.number, value, candidate.model):
                run.set_tag("best_so_far", "true")
        except optuna.TrialPruned as exc:
            reason = str(exc) or None
            if reason:
                trial.set_user_attr(PRUNE_REASON_ATTR, reason)
            run.finish(trial, "PRUNED", reason=reason)
            raise
        except BaseException as exc:
            reason = f"{type(exc).__name__}: {exc}".strip().splitlines()[0][:500]
            trial.set_user_attr(FAIL_REASON_ATTR, reason)
            run.finish(trial, "FAIL", reason=reason, traceback=traceback.format_exc())
            raise
        else:
            run.finish(trial, "COMPLETE")
            return value
        finally:
            keras.backend.clear_session()
            gc.collect()
