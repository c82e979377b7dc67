"""Fit one candidate, reporting every epoch to Optuna (pruning) and MLflow."""

from __future__ import annotations

import math
import sys
import time

import keras
import numpy as np
import optuna
from optuna_integration import KerasPruningCallback

from search import signals
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


class EpochTimer(NotCopied, keras.callbacks.Callback):
    """Projects each epoch's seconds from its batches and prunes a trial over ``max_seconds``.

    The projection is the mean time of an epoch's batches after its first (which pays for
    tracing or compiling) times the number of batches, taken from the ``min_batches``-th
    batch on, so a model far too slow for the budget stops after a few batches instead of
    a full epoch (or after its first batch, when that alone takes longer than an epoch may).
    Optuna's pruners only act at epoch ends, which is why this is ours. ``seconds`` is the
    slowest epoch's projection so far; ``why`` names the limit.
    """

    def __init__(self, max_seconds: float | None = None, why: str = "", min_batches: int = 3):
        super().__init__()
        self.max_seconds, self.why, self.min_batches = max_seconds, why, min_batches
        self.seconds: float | None = None
        self._began = self._since = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._began = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch == 0:
            self._since = now
            self._check(now - self._began, f"its first batch alone took {now - self._began:.0f} s")
            return
        steps = (self.params or {}).get("steps")
        if steps and batch >= self.min_batches:
            projected = (now - self._since) / batch * steps
            self.seconds = max(self.seconds or 0.0, projected)
            self._check(projected, f"about {projected:.0f} s per epoch")

    def _check(self, seconds: float, what: str) -> None:
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise optuna.TrialPruned(f"too slow: {what}, over {self.max_seconds:.0f} s per epoch ({self.why})")


class StopOnSignal(NotCopied, keras.callbacks.Callback):
    """Raises a SIGINT / SIGTERM recorded during training at the end of a batch (search/signals.py)."""

    def on_train_batch_end(self, batch, logs=None):
        signals.raise_pending()

    def on_test_batch_end(self, batch, logs=None):
        signals.raise_pending()


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
          timer: EpochTimer | None = None) -> float:
    """Fit the candidate's phases for ``plan`` epochs each; return the best epoch's val_accuracy.

    Epochs are counted across phases, so Optuna's pruner sees one curve. Early stopping
    acts within a phase. The model ends with the weights of the best epoch of all phases.
    Raises optuna.TrialPruned when the pruner or ``timer`` says so, and TrialFailed when
    the loss stops being finite.
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
            StopOnSignal(),
            keras.callbacks.TerminateOnNaN(),
            *([timer] if timer is not None else []),
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
