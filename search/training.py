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
from spaces import Candidate


class TrialFailed(Exception):
    """A trial that cannot produce a value (NaN loss): it fails, the study goes on."""


class EpochLogger(keras.callbacks.Callback):
    """Sends each epoch's metrics and learning rate to the trial's MLflow run."""

    def __init__(self, run: TrialRun):
        super().__init__()
        self.run = run

    def on_epoch_end(self, epoch, logs=None):
        metrics = dict(logs or {})
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.run.log_epoch(epoch, metrics)


def early_stopping_patience(epochs: int) -> int:
    """Stop after this many epochs without a better val_accuracy."""
    return max(2, epochs // 4)


def train(candidate: Candidate, data: Dataset, epochs: int, trial: optuna.Trial, run: TrialRun) -> float:
    """Fit up to ``epochs`` with early stopping; return the best epoch's val_accuracy.

    The model ends with the weights of that best epoch. Raises optuna.TrialPruned when
    the pruner says so and TrialFailed when the loss stops being finite.
    """
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        EpochLogger(run),  # before pruning, so a pruned trial's last epoch is logged
        KerasPruningCallback(trial, OBJECTIVE),
        keras.callbacks.EarlyStopping(
            monitor=OBJECTIVE, mode="max", patience=early_stopping_patience(epochs), restore_best_weights=True
        ),
    ]
    started = time.perf_counter()
    history = candidate.model.fit(
        data.x_train, data.y_train,
        batch_size=candidate.batch_size,
        epochs=epochs,
        validation_data=(data.x_val, data.y_val),
        callbacks=callbacks,
        verbose=1 if sys.stdout.isatty() else 2,
    )
    run.log_metrics({"training_seconds": time.perf_counter() - started, "epochs_trained": len(history.epoch)})
    losses = history.history.get("loss", [])
    if not losses or not all(math.isfinite(v) for v in losses):
        raise TrialFailed(f"loss became NaN or infinite at epoch {len(losses)}")
    return float(np.max(history.history[OBJECTIVE]))
