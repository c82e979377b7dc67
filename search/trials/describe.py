"""A trial in a few words, one wording everywhere: the model (``key_params``), why it ended as it
did (``why``) and how it ended (``how_it_ended``). The progress lines, the dashboard's notes,
the leaderboard and the report all say it so."""

from __future__ import annotations

import optuna

from imgsearch.records import (DEADLINE_ATTR, ENSEMBLE_OF_ATTR, ENSEMBLE_WEIGHTS_ATTR, FAIL_REASON_ATTR,
                               PLANNED_EPOCHS_ATTR, PRUNE_REASON_ATTR)

KEY_PARAMS = 4  # params named, in the order the trial sampled them


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def key_params(trial) -> str:
    """A few words on the model: an ensemble's members and weights, else the first KEY_PARAMS
    params the trial sampled (the architecture comes first in every space), named without their
    family's prefix, augmentation and AutoKeras's normalize switch left out."""
    members = trial.user_attrs.get(ENSEMBLE_OF_ATTR)
    if members:
        weights = trial.user_attrs.get(ENSEMBLE_WEIGHTS_ATTR, [])
        return "trials " + ", ".join(f"{n} ({w:.2f})" for n, w in zip(members, weights))
    named = [(name.rsplit("/", 1)[-1], value) for name, value in trial.params.items()
             if name != "family" and "aug" not in name and not name.endswith("/normalize")]
    return ", ".join(f"{name}={_short(value)}" for name, value in named[:KEY_PARAMS])


def _short(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def why(trial) -> str:
    """Why a pruned or failed trial stopped, or how a complete one's epochs were shortened;
    empty for a complete trial that trained its planned epochs."""
    attrs = trial.user_attrs
    if trial.state == optuna.trial.TrialState.PRUNED:
        return attrs.get(PRUNE_REASON_ATTR) or "by the pruner"
    if trial.state == optuna.trial.TrialState.FAIL:
        return attrs.get(FAIL_REASON_ATTR) or "no reason recorded"
    if attrs.get(DEADLINE_ATTR):
        return f"stopped at the deadline after epoch {attrs[DEADLINE_ATTR]}"
    if attrs.get(PLANNED_EPOCHS_ATTR):
        return f"cut to {attrs[PLANNED_EPOCHS_ATTR]} epochs to fit the budget"
    return ""


def ended(state: str, value: float | None, why: str = "") -> str:
    """``complete: val_accuracy 0.8125``, ``pruned: <why>`` or ``failed: <why>`` (``state``: Optuna's name)."""
    if state == "COMPLETE":
        return f"complete: val_accuracy {value:.4f}"
    return f"{'pruned' if state == 'PRUNED' else 'failed'}: {why}"


def how_it_ended(trial: optuna.trial.FrozenTrial) -> str:
    """``ended`` with why, or for a complete trial its epochs or why they were fewer than planned."""
    if trial.state != optuna.trial.TrialState.COMPLETE:
        return ended(trial.state.name, None, why(trial))
    return f"{ended('COMPLETE', trial.value)} ({why(trial) or plural(len(trial.intermediate_values), 'epoch')})"
