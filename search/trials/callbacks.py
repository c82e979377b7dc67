"""The Keras callbacks a trial's fit runs with (``training.py`` puts them together): each epoch to
the trial's MLflow run and the console, Optuna's pruning, the epoch timer that keeps the budget,
the chance check, the plan and the learning-rate schedule, the best weights, signals.

Each is ``NotCopied``: KerasTuner deep-copies a search's callbacks, and these must stay the
ones reporting to this trial.
"""

from __future__ import annotations

import io
import math
import statistics
import sys
import time
from collections.abc import Callable

import keras
import numpy as np
import optuna
from optuna_integration import KerasPruningCallback

from imgsearch.records import FRACTION_ATTR, OBJECTIVE, STARTUP_SECONDS_ATTR, family_of
from imgsearch.trials.tracking import TrialRun
from imgsearch.spaces import Candidate
from imgsearch.trials import signals
from imgsearch.trials.budget import EpochPlan
from imgsearch.trials.progress import worker_tag


# A trial below this many times the chance level (and a point) at its first check is stopped.
CHANCE_FACTOR = 1.2
# The share of the time a trial has left that it may spend preparing (a backbone's features)
# before it trains: the rest is for its epochs.
PREPARATION_SHARE = 0.5


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


class ModelLogger(NotCopied, keras.callbacks.Callback):
    """Logs the trial's model's parameter count and summary to its run, once, when the first fit
    begins: the model is built by then, whichever library built it. That is the candidate's
    model (a transfer trial first fits only its head on features), or the one being fit."""

    def __init__(self, run: TrialRun, candidate: Candidate):
        super().__init__()
        self.run, self.candidate, self.logged = run, candidate, False

    def on_train_begin(self, logs=None):
        if not self.logged:
            model = self.candidate.model or self.model
            out = io.StringIO()
            model.summary(print_fn=lambda line, **_: out.write(line + "\n"))
            self.run.log_model_info(model.count_params(), out.getvalue())
            self.logged = True


class EpochLine(NotCopied, keras.callbacks.Callback):
    """One line per epoch, counted against the trial's plan as it is now, with the phase's name
    when the trial has several (Keras's own ``Epoch N/M`` counts the fit's ``epochs``, which the
    budget may since have cut, and its progress bar would glue the next line to its own)."""

    def __init__(self, plan: EpochPlan, phase: str | None, stream=None):
        super().__init__()
        self.plan, self.phase, self.stream, self.began = plan, phase, stream, time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.began = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        shown = [f"{key} {logs[key]:.4f}" for key in ("loss", "accuracy", "val_loss", OBJECTIVE) if key in logs]
        phase = f" ({self.phase})" if self.phase else ""
        print(f"{worker_tag()}  epoch {epoch + 1}/{self.plan.total}{phase}: {', '.join(shown)} "
              f"({time.perf_counter() - self.began:.1f} s)", file=self.stream or sys.stdout, flush=True)


class PruningCallback(NotCopied, KerasPruningCallback):
    """optuna-integration's Keras pruning callback, except after the trial's last planned epoch,
    and for a trial on a fraction of the training images (search/trials/fidelity.py).

    Then it only reports: pruning after the last epoch saves no training and would only mark
    a fully trained trial PRUNED, which also keeps it from being the study's best; and Optuna's
    pruners would judge a trial on fewer images against those on all of them, whose curves are
    higher (their values are not comparable, and such a trial is cheap by design).
    """

    def __init__(self, trial: optuna.Trial, monitor: str, plan: EpochPlan):
        super().__init__(trial, monitor)
        self.trial, self.monitor, self.plan = trial, monitor, plan
        self.judged = float(trial.user_attrs.get(FRACTION_ATTR, 1.0)) >= 1.0

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if epoch < self.plan.total - 1 and self.judged:
            try:
                super().on_epoch_end(epoch, logs)
            except optuna.TrialPruned:
                raise optuna.TrialPruned(self._reason(epoch, value)) from None
            return
        if value is not None:
            self.trial.report(float(value), step=epoch)

    def _reason(self, epoch: int, value: float) -> str:
        """Which pruner, at which value, against what: the best other trial at that epoch."""
        study = self.trial.study
        pruner = type(study.pruner).__name__.removesuffix("Pruner").lower()
        others = [t.intermediate_values.get(epoch) for t in study.get_trials(deepcopy=False)
                  if t.number != self.trial.number]
        best = max((v for v in others if v is not None), default=None)
        against = f" (the best other trial had {best:.4f} there)" if best is not None else ""
        return f"by {pruner} after epoch {epoch + 1} at {value:.4f}{against}"


class EpochTimer(NotCopied, keras.callbacks.Callback):
    """Projects each epoch's seconds from its batches; prunes a trial over ``max_seconds`` and
    cuts its ``plan`` to end before the budget's deadline (or prunes it when it cannot).

    The projection is the mean time of an epoch's batches after its first (which pays for
    tracing or compiling) times the number of batches, taken from the ``min_batches``-th
    batch on, so a model far too slow for the budget stops after a few batches instead of
    a full epoch (or after its first batch, when that alone takes longer than an epoch may).
    Optuna's pruners only act at epoch ends, which is why this is ours. ``seconds`` is the
    slowest epoch's projection so far; ``why`` names the limit; ``startup`` the seconds from the
    timer's creation (the trial's start) to the end of the first batch; ``prepared`` whether they
    include a preparation its space foresaw (a backbone's features to compute), which the next
    trials of its family will not pay again.
    """

    def __init__(self, max_seconds: float | None = None, why: str = "", min_batches: int = 3,
                 plan: EpochPlan | None = None):
        super().__init__()
        self.max_seconds, self.why, self.min_batches, self.plan = max_seconds, why, min_batches, plan
        self.seconds: float | None = None
        self.created, self.startup, self.prepared = time.perf_counter(), None, False
        self._began = self._since = 0.0
        self._epoch = self._first = 0

    def on_train_begin(self, logs=None):
        self._first = None

    def on_epoch_begin(self, epoch, logs=None):
        self._began, self._epoch = time.perf_counter(), epoch
        if self._first is None:
            self._first = epoch

    def on_epoch_end(self, epoch, logs=None):
        # A whole epoch, validation and callbacks included, once a fit's first (which pays for
        # tracing) is over: the truest measure of what the rest of the plan will take.
        if self.plan is not None and epoch > self._first:
            now = time.perf_counter()
            self.plan.fit_to(epoch + 1, self.plan.clock(), now - self._began)

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if batch == 0:
            self._since = now
            if self.startup is None:
                self.startup = now - self.created
            self._check(now - self._began, f"its first batch alone took {now - self._began:.0f} s")
            return
        steps = (self.params or {}).get("steps")
        if steps and batch >= self.min_batches:
            projected = (now - self._since) / batch * steps
            self.seconds = max(self.seconds or 0.0, projected)
            self._check(projected, f"about {projected:.0f} s per epoch")
            if self.plan is not None and batch == self.min_batches:  # once an epoch
                began = self.plan.clock() - (now - self._began)
                reason = self.plan.fit_to(self._epoch, began, projected)
                if reason:
                    raise optuna.TrialPruned(reason)
                if self._epoch == self._first > 0 and self.plan.ends_late(began, projected):
                    # A later phase's first epoch (fine-tuning on images: many times a head epoch
                    # on kept features) that would end past the deadline: stop after this batch;
                    # the trial keeps its best epoch so far (``train``).
                    self.plan.stopped_at_deadline = self._epoch + 1
                    self.model.stop_training = True

    def _check(self, seconds: float, what: str) -> None:
        if self.max_seconds is not None and seconds > self.max_seconds:
            raise optuna.TrialPruned(f"too slow: {what}, over {self.max_seconds:.0f} s per epoch ({self.why})")


def check_startup(trial: optuna.Trial, timer: EpochTimer, deadline: float | None) -> None:
    """Prune a trial, before it trains, that would not end its first batch by ``deadline``
    (``time.monotonic()``) if it starts up (builds, traces) as slowly as the median of the
    finished trials of its family: an AutoKeras model can take a minute to its first batch.
    (A trial that computed a backbone's features first recorded no start-up: ``check_preparation``
    judges those.)"""
    if deadline is None:
        return
    family = family_of(trial)
    seen = [t.user_attrs[STARTUP_SECONDS_ATTR] for t in trial.study.get_trials(deepcopy=False)
            if t.state.is_finished() and STARTUP_SECONDS_ATTR in t.user_attrs and family_of(t) == family]
    if not seen:
        return
    needed = statistics.median(seen) - (time.perf_counter() - timer.created)
    left = deadline - time.monotonic()
    if needed > left:
        raise optuna.TrialPruned(f"cannot finish: trials like it took {statistics.median(seen):.0f} s to their "
                                 f"first batch, {max(0.0, left):.0f} s of the budget left")


def check_preparation(seconds: float, plan: EpochPlan) -> None:
    """Prune a trial, before it prepares, whose space foresees ``seconds`` of preparation (a
    backbone's features to compute) over PREPARATION_SHARE of the time its ``plan`` has left:
    on 45,000 images a backbone's features at 224 px with flips are about 13 minutes here."""
    left = None if plan.deadline is None else plan.deadline - time.monotonic()
    if seconds and left is not None and seconds > PREPARATION_SHARE * left:
        raise optuna.TrialPruned(f"cannot finish: about {seconds:.0f} s to compute its backbone's features, "
                                 f"{max(0.0, left):.0f} s of {plan.limit} left")


class StopAtChance(NotCopied, keras.callbacks.Callback):
    """Prunes a trial still at chance level at its first check, whatever the study's pruner (unless
    that is its last planned epoch): after epoch ``check_epoch`` (from 1; Hyperband's first rung;
    None: no check), a validation accuracy below
    CHANCE_FACTOR times the largest class's share (plus a point) means it has learnt nothing yet,
    and the epochs left are better spent on another trial. Before that check a trial is still in
    its warmup: the measured curves are near chance for a few epochs, then climb."""

    def __init__(self, check_epoch: int | None, chance: float, plan: EpochPlan):
        super().__init__()
        self.check_epoch, self.chance, self.plan = check_epoch, chance, plan

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(OBJECTIVE)
        last = epoch + 1 >= self.plan.total  # nothing left to save: the trial ends as it is (PruningCallback)
        if epoch + 1 == self.check_epoch and not last and value is not None \
                and value < CHANCE_FACTOR * self.chance + 0.01:
            raise optuna.TrialPruned(f"at chance level after epoch {epoch + 1}: val_accuracy {value:.4f}, "
                                     f"chance {self.chance:.4f}")


def chance_level(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent class of ``labels``."""
    return float(np.bincount(np.asarray(labels)).max() / max(1, len(labels)))


def first_check(epochs: int) -> int | None:
    """The epoch (from 1) of a trial's first check: a third of its planned epochs, as Hyperband's
    first rung; none below 6 epochs (a check at epoch 1 says little, and saves little)."""
    return epochs // 3 if epochs >= 6 else None


class FollowPlan(NotCopied, keras.callbacks.Callback):
    """Ends a phase's fit at its planned last epoch (the plan may have been cut since the fit
    began) or at the first epoch end past the deadline, which it records in the plan."""

    def __init__(self, plan: EpochPlan, phase_end: Callable[[], int]):
        super().__init__()
        self.plan, self.phase_end = plan, phase_end

    def on_epoch_end(self, epoch, logs=None):
        if self.plan.past_deadline() and epoch + 1 < self.plan.total:
            self.plan.stopped_at_deadline = epoch + 1
            self.model.stop_training = True
        if epoch + 1 >= self.phase_end():
            self.model.stop_training = True


class WarmupCosine(NotCopied, keras.callbacks.Callback):
    """The learning rate over a fit: a linear warmup from a tenth of the optimizer's rate to
    all of it over the first ``warmup`` share of the planned steps, then a cosine down to zero.

    The peak is the optimizer's learning rate when the fit starts (the sampled one). The
    plan is ``epochs()``, asked at every batch, so a trial whose epochs are cut to fit the
    budget anneals within what it has left. Keras's schedules are fixed when the optimizer
    is built, before the first batches tell how long an epoch takes: that is why this is ours.
    An optimizer built with a schedule of its own (AutoKeras's AdamW warmup) keeps it: Keras
    cannot set its learning rate, and the space chose that schedule.
    """

    def __init__(self, epochs: Callable[[], int], warmup: float = 0.2, first_epoch: int = 0):
        super().__init__()
        self.epochs, self.warmup, self.first_epoch = epochs, warmup, first_epoch
        self.peak: float | None = None
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self.peak = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        try:
            self.model.optimizer.learning_rate = self.peak
        except TypeError:  # "... created with a LearningRateSchedule ... not settable"
            self.peak = None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch - self.first_epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.peak is None:
            return
        steps = (self.params or {}).get("steps") or 1
        self.model.optimizer.learning_rate = self.peak * warmup_cosine(
            (self._epoch * steps + batch) / max(1, self.epochs() * steps), self.warmup)


def warmup_cosine(progress: float, warmup: float) -> float:
    """The schedule's factor of the peak learning rate at ``progress`` (0 to 1) of the steps."""
    if progress < warmup:
        return 0.1 + 0.9 * progress / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (progress - warmup) / (1 - warmup))))


class StopOnSignal(NotCopied, keras.callbacks.Callback):
    """Raises a SIGINT / SIGTERM recorded during training at the end of a batch (search/trials/signals.py)."""

    def on_train_batch_end(self, batch, logs=None):
        signals.raise_pending()

    def on_test_batch_end(self, batch, logs=None):
        signals.raise_pending()


class BestWeights(NotCopied, keras.callbacks.Callback):
    """The best epoch of all a trial's fits (its phases): ``best`` is its ``monitor`` value, and
    each fit ends on its weights, so a later phase starts from the best so far and a phase that
    did worse gives way to the one before. One object for the whole trial.

    The weights kept are ``whole()``'s, the trial's model: a phase may fit a part of it (the
    transfer space's head phase fits the head on kept features), and the next phase fits all
    of it. None from ``whole`` (a model its library builds as it trains): the fitted model's.

    Keras's ``EarlyStopping(restore_best_weights=True)`` keeps the best of one fit only, and only
    when it stops early; a trial's phases are several fits.
    """

    def __init__(self, whole: Callable[[], keras.Model | None] = lambda: None, monitor: str = OBJECTIVE):
        super().__init__()
        self.whole, self.monitor = whole, monitor
        self.best, self.weights, self.last_was_best = -math.inf, None, False

    def _kept(self) -> keras.Model:
        return self.whole() or self.model

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        self.last_was_best = value is not None and value > self.best
        if self.last_was_best:
            self.best, self.weights = float(value), self._kept().get_weights()

    def on_train_end(self, logs=None):
        if self.weights is not None and not self.last_was_best:
            self._kept().set_weights(self.weights)
            self.last_was_best = True


class History(NotCopied, keras.callbacks.History):
    """Keras's History, kept by reference (a library's own fit may return none)."""
