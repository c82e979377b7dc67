"""Where a SPACE=auto search spends its trials: ``FamilySampler`` chooses each trial's family from
what the families have shown so far, and leaves every other parameter to the study's sampler.

Why ours: a sampler left to choose the family itself (TPE) draws it at random for its first ten
trials, and one draw of a family whose models cannot train an epoch here costs a minute or
more (measured: four AutoKeras trials took 270 s of a 600 s search on the Tiny ImageNet
sample, each pruned as too slow before its first epoch ended). Optuna's samplers have no
notion of a parameter that decides what a trial costs; a wrapper that fixes one parameter and
hands the rest on is how Optuna composes samplers (``PartialFixedSampler`` does the same).
"""

from __future__ import annotations

import optuna

EXPLOIT = 0.75  # the share of the seconds given to the family with the best validation accuracy so far


def family_progress(study: optuna.Study, param: str) -> dict[str, dict]:
    """Per family (the ``param`` value) of the study's finished trials: trials, epochs reported, the
    seconds they took and the best validation accuracy reached (a pruned trial's best epoch counts)."""
    progress: dict[str, dict] = {}
    for trial in study.get_trials(deepcopy=False):
        if not trial.state.is_finished() or param not in trial.params:
            continue
        entry = progress.setdefault(trial.params[param], {"trials": 0, "epochs": 0, "seconds": 0.0, "best": None})
        values = list(trial.intermediate_values.values()) + ([trial.value] if trial.value is not None else [])
        entry["trials"] += 1
        entry["epochs"] += len(trial.intermediate_values)
        if trial.datetime_start and trial.datetime_complete:
            entry["seconds"] += (trial.datetime_complete - trial.datetime_start).total_seconds()
        if values:
            entry["best"] = max(values + ([entry["best"]] if entry["best"] is not None else []))
    return progress


def choose_family(progress: dict[str, dict], choices: list[str], pick: int) -> str:
    """The next trial's family, from ``progress`` (``family_progress``) and ``pick`` (any integer,
    for a choice among the others):

    - a family never tried is tried first (in the order of ``choices``);
    - a family none of whose trials finished an epoch, while another's did, is out: its models
      cannot train here in the time the others take (too slow, or failing);
    - of the rest, the family with the best validation accuracy so far gets EXPLOIT of the
      seconds: another family's turn comes when the others together took less than the rest.
    """
    untried = [f for f in choices if f not in progress]
    if untried:
        return untried[0]
    trained = [f for f in choices if progress[f]["epochs"]]
    alive = trained or list(choices)
    leader = leading(progress, choices) or alive[0]
    others = [f for f in alive if f != leader]
    total = sum(progress[f]["seconds"] for f in alive)
    if not others or sum(progress[f]["seconds"] for f in others) >= (1 - EXPLOIT) * total:
        return leader
    return others[pick % len(others)]


def leading(progress: dict[str, dict], choices: list[str]) -> str | None:
    """The family with the best validation accuracy so far among those that trained (the first of
    ``choices`` on a tie); None when none has finished an epoch yet."""
    trained = [f for f in choices if f in progress and progress[f]["epochs"]]
    if not trained:
        return None
    return max(trained, key=lambda f: (progress[f]["best"] or 0.0, -choices.index(f)))


def share_deadline(trial: optuna.Trial, param: str, deadline: float | None, now: float) -> float | None:
    """The deadline of ``trial`` (``time.monotonic()`` seconds) when its family does not lead: it
    may train for 1 - EXPLOIT of the time left, so that one slow trial of another family (an
    AutoKeras model at 25 s an epoch) cannot take the rest of the budget from the leader.
    None when its family leads, or none does yet."""
    if deadline is None or param not in trial.params:
        return None
    choices = list(trial.distributions[param].choices)
    leader = leading(family_progress(trial.study, param), choices)
    if leader is None or trial.params[param] == leader:
        return None
    return now + (1 - EXPLOIT) * max(0.0, deadline - now)


class FamilySampler(optuna.samplers.BaseSampler):
    """``base`` for every parameter but ``param`` (the family), which ``choose_family`` decides; a
    value fixed by ``enqueue_trial`` (the portfolio) is kept, as with any sampler."""

    def __init__(self, base: optuna.samplers.BaseSampler, param: str, seed: int | None = None):
        import numpy as np

        self.base, self.param = base, param
        self._rng = np.random.RandomState(seed)

    def infer_relative_search_space(self, study, trial):
        space = self.base.infer_relative_search_space(study, trial)
        return {name: dist for name, dist in space.items() if name != self.param}

    def sample_relative(self, study, trial, search_space):
        return self.base.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        if param_name != self.param:
            return self.base.sample_independent(study, trial, param_name, param_distribution)
        # ``study`` here is what the pruner lets samplers see: with Hyperband, only the trials of
        # this trial's bracket (Optuna's private ``_BracketStudy``, which keeps the whole study
        # as ``_study``). The family is chosen from the whole study.
        whole = getattr(study, "_study", study)
        return choose_family(family_progress(whole, self.param), list(param_distribution.choices),
                             int(self._rng.randint(1 << 30)))

    def before_trial(self, study, trial):
        self.base.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng.seed()
