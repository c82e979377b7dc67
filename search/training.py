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
    """optuna-integration's Keras pruning callback, except after the trial's last epoch.

    Then it only reports: pruning saves no training there and would only mark a fully
    trained trial PRUNED, which also keeps it from being the study's best.
    """

    def __init__(self, trial: optuna.Trial, monitor: str, last_epoch: int):
        super().__init__(trial, monitor)
        self.trial, self.monitor, self.last_epoch = trial, monitor, last_epoch

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if epoch < self.last_epoch:
            try:
                super().on_epoch_end(epoch, logs)
            except optuna.TrialPruned:
                raise optuna.TrialPruned(f"pruned after epoch {epoch + 1} at {value:.4f}") from None
            return
        if value is not None:
            self.trial.report(float(value), step=epoch)


class EpochTimeLimit(NotCopied, keras.callbacks.Callback):
    """Prunes a trial whose epochs would take longer than ``max_seconds``.

    The projection is the mean time of an epoch's batches after its first (which pays
    for tracing or compiling), taken from the ``min_batches``-th batch on, so a model
    that is far too slow for the budget stops after a few batches instead of a full
    epoch. Optuna's pruners only act at epoch ends, which is why this is ours.
    """

    def __init__(self, max_seconds: float, min_batches: int = 3):
        super().__init__()
        self.max_seconds, self.min_batches = max_seconds, min_batches
        self.since: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        self.since = None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self.since is None:
            self.since = now
            return
        steps = (self.params or {}).get("steps")
        if steps and batch >= self.min_batches:
            projected = (now - self.since) / batch * steps
            if projected > self.max_seconds:
                raise optuna.TrialPruned(
                    f"too slow: about {projected:.0f} s per epoch, over MAX_EPOCH_SECONDS={self.max_seconds:g}"
                )


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


def train(candidate: Candidate, plan: list[int], data: Dataset, trial: optuna.Trial, run: TrialRun,
          max_epoch_seconds: float | None = None) -> float:
    """Fit the candidate's phases for ``plan`` epochs each; return the best epoch's val_accuracy.

    Epochs are counted across phases, so Optuna's pruner sees one curve. Early stopping
    acts within a phase. The model ends with the weights of the best epoch of all phases.
    Raises optuna.TrialPruned when the pruner says so or an epoch would take longer than
    ``max_epoch_seconds``, and TrialFailed when the loss stops being finite.
    """
    started = time.perf_counter()
    best, best_weights, losses, done = -math.inf, None, [], 0
    for number, (phase, epochs) in enumerate(zip(candidate.phases, plan), start=1):
        if epochs == 0:
            continue
        if phase.start is not None:
            phase.start()
        history = History()
        callbacks = [
            keras.callbacks.TerminateOnNaN(),
            *([EpochTimeLimit(max_epoch_seconds)] if max_epoch_seconds else []),
            EpochLogger(run, number),  # before pruning, so a pruned trial's last epoch is logged
            PruningCallback(trial, OBJECTIVE, last_epoch=sum(plan) - 1),
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
