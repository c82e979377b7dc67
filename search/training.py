"""Fit one candidate, reporting every epoch to Optuna (pruning) and MLflow."""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np
import optuna
from optuna_integration import KerasPruningCallback

from search.datasets import Dataset
from search.study import OBJECTIVE
from search.tracking import TrialRun
from spaces import Candidate, Phase


class TrialFailed(Exception):
    """A trial that cannot produce a value (NaN loss): it fails, the study goes on."""


class NotCopied:
    """KerasTuner deep-copies a search's callbacks; these must stay the ones reporting to this trial."""

    def __deepcopy__(self, memo):
        return self


class EpochLogger(NotCopied, keras.callbacks.Callback):
    """Sends each epoch's metrics, learning rate and phase number (from 1) to the trial's MLflow run."""

    def __init__(self, run: TrialRun, phase: int):
        super().__init__()
        self.run, self.phase = run, phase

    def on_epoch_end(self, epoch, logs=None):
        metrics = dict(logs or {})
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        metrics["phase"] = self.phase
        self.run.log_epoch(epoch, metrics)


class PruningCallback(NotCopied, KerasPruningCallback):
    """optuna-integration's Keras pruning callback, but it stops the fit instead of raising.

    A library that runs the fit itself (KerasTuner, under AutoKeras) takes an exception
    raised there for a failed trial, so ``train`` raises TrialPruned once the fit has
    ended. After the trial's last epoch it only reports: pruning then saves no training
    and would only mark a fully trained trial PRUNED, which also keeps it from being the
    study's best.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, last_epoch: int):
        super().__init__(trial, monitor)
        self.trial, self.monitor, self.last_epoch = trial, monitor, last_epoch
        self.pruned = False

    def on_epoch_end(self, epoch, logs=None):
        if epoch >= self.last_epoch:
            value = (logs or {}).get(self.monitor)
            if value is not None:
                self.trial.report(float(value), step=epoch)
            return
        try:
            super().on_epoch_end(epoch, logs)
        except optuna.TrialPruned:
            self.pruned = True
            self.model.stop_training = True


class History(NotCopied, keras.callbacks.History):
    """Keras's History, kept by reference (a library's own fit may return none)."""


def early_stopping_patience(epochs: int) -> int:
    """Stop after this many epochs without a better val_accuracy."""
    return max(2, epochs // 4)


def plan_epochs(phases: tuple[Phase, ...], epochs: int) -> list[int]:
    """Each phase's number of epochs: its share of ``epochs``, rounded on the running total.

    The first phase gets at least one epoch; a later one may get none (and is skipped).
    """
    plan, done, share = [], 0, 0.0
    for phase in phases:
        share += phase.share
        end = min(epochs, max(1, int(epochs * share + 0.5)))
        plan.append(end - done)
        done = end
    plan[-1] += epochs - done
    return plan


def train(candidate: Candidate, plan: list[int], data: Dataset, trial: optuna.Trial, run: TrialRun) -> float:
    """Fit the candidate's phases for ``plan`` epochs each; return the best epoch's val_accuracy.

    Epochs are counted across phases, so Optuna's pruner sees one curve. Early stopping
    acts within a phase. The model ends with the weights of the best epoch of all phases.
    Raises optuna.TrialPruned when the pruner says so and TrialFailed when the loss
    stops being finite.
    """
    started = time.perf_counter()
    best, best_weights, losses, done = -math.inf, None, [], 0
    for number, (phase, epochs) in enumerate(zip(candidate.phases, plan), start=1):
        if epochs == 0:
            continue
        if phase.start is not None:
            phase.start()
        pruning, history = PruningCallback(trial, OBJECTIVE, last_epoch=sum(plan) - 1), History()
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            EpochLogger(run, number),  # before pruning, so a pruned trial's last epoch is logged
            pruning,
            keras.callbacks.EarlyStopping(
                monitor=OBJECTIVE, mode="max", patience=early_stopping_patience(epochs), restore_best_weights=True
            ),
            history,
        ]
        (candidate.fit or candidate.model.fit)(
            data.x_train, data.y_train,
            batch_size=candidate.batch_size,
            initial_epoch=done,
            epochs=done + epochs,
            validation_data=(data.x_val, data.y_val),
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
        done += len(history.epoch)
        losses += history.history.get("loss", [])
        if pruning.pruned:
            raise optuna.TrialPruned(f"pruned after epoch {done}")
        if not history.epoch or not all(math.isfinite(v) for v in losses):
            break
        phase_best = float(np.max(history.history[OBJECTIVE]))
        if phase_best > best:
            best = phase_best
            if number < len(candidate.phases):  # a later phase may do worse: keep these weights
                best_weights = candidate.model.get_weights()
        elif best_weights is not None:
            candidate.model.set_weights(best_weights)
    run.log_metrics({"training_seconds": time.perf_counter() - started, "epochs_trained": done})
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(losses)}")
    return best
