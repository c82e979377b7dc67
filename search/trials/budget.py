"""The rules of time, in one place: BUDGET, the seconds a search may train for, what every trial
does to keep within them, and MAX_EPOCH_SECONDS, the cap on one epoch.

The clock starts once the data is loaded (preparing a dataset the first time is not
counted). No trial starts after the deadline (``Budget``, a study callback that also stops
the search once no trial could finish); a trial plans its epochs to end before it
(``EpochPlan.fit_to``, from its first batches) and, should it still be running at the
deadline, stops at the end of that epoch and keeps the best value it reached. An epoch
projected longer than ``epoch_limit`` prunes its trial. The Keras callbacks that time the
epochs and apply these rules are ``EpochTimer`` and ``FollowPlan`` (trials/callbacks.py);
a SPACE=auto family that does not lead gets a share of the time left (trials/families.py).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field

import optuna

from imgsearch.records import EPOCH_SECONDS_ATTR
from imgsearch.trials.fidelity import fraction_of

# A trial that can train less than this share of its planned epochs before the deadline
# is skipped (pruned): a much shorter schedule seldom beats what the search already has.
MIN_EPOCH_SHARE = 1 / 3
# Projected epochs are stretched by this much for validation and the callbacks' own work.
EPOCH_MARGIN = 1.1
SLOWDOWN_LIMIT = 20  # MAX_EPOCH_SECONDS's default: this many times the median complete trial's epoch,
MIN_EPOCH_LIMIT = 60.0  # but never below this many seconds (short epochs time too noisily)


def complete_epoch_seconds(study: optuna.Study, exploring: float | None = None) -> list[float]:
    """The projected epoch seconds of the study's complete trials (those that recorded one); with
    ``exploring``, each as it would be on that share of the training images (an epoch's time
    grows with the images: search/trials/fidelity.py)."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    return [t.user_attrs[EPOCH_SECONDS_ATTR] * (1.0 if exploring is None else exploring / fraction_of(t))
            for t in complete if EPOCH_SECONDS_ATTR in t.user_attrs]


def budget_seconds(budget: float | None, timeout: float | None) -> float | None:
    """The search's seconds: BUDGET, or TIMEOUT (its older name) when BUDGET is not set."""
    return timeout if budget is None else budget


def epoch_limit(study: optuna.Study, max_epoch_seconds: float | None) -> tuple[float | None, str]:
    """The most seconds an epoch of the study's next trial may take, and why (None: no cap).

    ``max_epoch_seconds`` (MAX_EPOCH_SECONDS) is a fixed cap, 0 none; by default (None) the cap
    is SLOWDOWN_LIMIT times the median epoch of the study's complete trials, at least
    MIN_EPOCH_LIMIT (none before the first completes).
    """
    if max_epoch_seconds == 0:
        return None, ""
    if max_epoch_seconds is not None:
        return max_epoch_seconds, f"MAX_EPOCH_SECONDS={max_epoch_seconds:g}"
    seconds = complete_epoch_seconds(study)
    if not seconds:
        return None, ""
    median = statistics.median(seconds)
    why = (f"{SLOWDOWN_LIMIT}x the median complete trial's {median:.1f} s, at least {MIN_EPOCH_LIMIT:.0f} s; "
           "MAX_EPOCH_SECONDS sets a fixed cap")
    return max(MIN_EPOCH_LIMIT, SLOWDOWN_LIMIT * median), why


class Budget:
    """``seconds`` from now (None: no deadline) for a search whose trials plan ``epochs`` and
    whose sampled trials train on ``exploring`` of the images. A study callback too: it stops
    the search once the time left is less than the shortest trial the study has seen would
    need on that share (on 45,000 images, a network on all of them had stopped a search with
    389 s left that trials on a fifth of them could use)."""

    def __init__(self, seconds: float | None, epochs: int, clock=time.monotonic, total: float | None = None,
                 exploring: float = 1.0):
        self.clock, self.seconds, self.epochs, self.exploring = clock, seconds, epochs, exploring
        # What the search began with: more than ``seconds`` in a process it continues in (TRIALS_PER_PROCESS).
        self.total = total if total is not None else seconds
        self.deadline = None if seconds is None else clock() + seconds
        self.reserve = 0.0  # the last seconds, kept for the end-of-budget step (``keep_for_ending``)
        self.ended = False  # set once it stopped the search
        self.ended_because = "the budget is spent"  # what it said when it stopped the search

    def keep_for_ending(self, seconds: float) -> None:
        """Trials must end ``seconds`` before the deadline: the search's last step takes them."""
        self.reserve = seconds

    @property
    def training_deadline(self) -> float | None:
        """The deadline for trials: the budget's, less what is kept for the last step."""
        return None if self.deadline is None else self.deadline - self.reserve

    def left(self) -> float | None:
        return None if self.deadline is None else self.deadline - self.clock()

    def training_left(self) -> float | None:
        return None if self.deadline is None else self.training_deadline - self.clock()

    def time_left(self) -> bool:
        """Whether a trial may still start: the search was not stopped and its deadline is ahead."""
        left = self.training_left()
        return not self.ended and (left is None or left > 0)

    def least_trial_seconds(self, study: optuna.Study) -> float | None:
        """The time the fastest complete trial's epochs would need for the shortest worthwhile run,
        on the share of the images a sampled trial trains on (``exploring``)."""
        seconds = complete_epoch_seconds(study, self.exploring)
        if not seconds:
            return None
        return min(seconds) * EPOCH_MARGIN * math.ceil(MIN_EPOCH_SHARE * self.epochs)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        left, least = self.training_left(), self.least_trial_seconds(study)
        if left is not None and (left <= 0 or (least is not None and left < least)):
            self.ended = True
            if left > 0:
                self.ended_because = (f"no trial can finish in the {left:.0f} s left (the fastest complete trial "
                                      f"would need about {least:.0f} s for a third of its epochs)")
            study.stop()


@dataclass
class EpochPlan:
    """How many epochs a trial trains: ``total`` (EPOCHS at first), cut, never raised, to fit
    a deadline. ``stopped_at_deadline`` is the epoch (from 1) the deadline stopped it after."""

    total: int
    deadline: float | None = None
    clock: object = field(default=time.monotonic, repr=False)
    limit: str = "the budget"  # what the deadline is, as the "cannot finish" reason says it
    stopped_at_deadline: int | None = None

    def fit_to(self, epoch: int, epoch_began: float, seconds_per_epoch: float) -> str | None:
        """Cut the plan so that epochs ``epoch`` (from 0, begun at ``epoch_began``) onwards end
        by the deadline at ``seconds_per_epoch``. In the trial's first epoch, returns why the
        trial is not worth training instead (it would keep less than MIN_EPOCH_SHARE of its
        epochs); later, what was trained is kept and the plan only shortens. None otherwise."""
        if self.deadline is None:
            return None
        affordable = epoch + int((self.deadline - epoch_began) // (seconds_per_epoch * EPOCH_MARGIN))
        if affordable >= self.total:
            return None
        if epoch == 0 and affordable < max(1, math.ceil(MIN_EPOCH_SHARE * self.total)):
            left = max(0.0, self.deadline - self.clock())
            return (f"cannot finish: about {seconds_per_epoch:.0f} s per epoch, {left:.0f} s of {self.limit} left "
                    f"for {self.total} epochs")
        self.total = max(epoch + 1, affordable)
        return None

    def ends_late(self, epoch_began: float, seconds_per_epoch: float) -> bool:
        """Whether an epoch begun at ``epoch_began`` would end past the deadline."""
        return self.deadline is not None and epoch_began + seconds_per_epoch * EPOCH_MARGIN > self.deadline

    def past_deadline(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline
