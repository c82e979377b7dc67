"""The study's trials as a table, best first, each in a few words: the search's last lines,
``SearchResult.leaderboard()`` and the trial lines' description of a model."""

from __future__ import annotations

import optuna

from imgsearch.records import (DEADLINE_ATTR, ENSEMBLE_OF_ATTR, ENSEMBLE_WEIGHTS_ATTR, FAIL_REASON_ATTR,
                               PARAM_COUNT_ATTR, PLANNED_EPOCHS_ATTR, PRUNE_REASON_ATTR, family_of)

KEY_PARAMS = 4  # params a row names, in the order the trial sampled them
COLUMNS = ["trial", "family", "params", "epochs", "seconds", "parameters", "val", "state", "why"]
SHOWN = 5  # rows the search prints at its end


def leaderboard(study, top: int | None = None):
    """The study's trials as a pandas DataFrame, best first (see ``SearchResult.leaderboard``)."""
    import pandas as pd

    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.state == optuna.trial.TrialState.WAITING:  # queued, never run
            continue
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append({
            "trial": trial.number, "family": family_of(trial), "params": key_params(trial),
            "epochs": len(trial.intermediate_values), "seconds": None if duration is None else round(duration, 1),
            "parameters": trial.user_attrs.get(PARAM_COUNT_ATTR), "val": trial.value,
            "state": trial.state.name, "why": why(trial),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["parameters"] = table["parameters"].astype("Int64")
    table = table.sort_values(["val", "trial"], ascending=[False, True], na_position="last", ignore_index=True)
    return table if top is None else table.head(top)


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
    attrs = trial.user_attrs
    for key in (PRUNE_REASON_ATTR, FAIL_REASON_ATTR):
        if attrs.get(key):
            return attrs[key]
    if attrs.get(DEADLINE_ATTR):
        return f"stopped at the deadline after epoch {attrs[DEADLINE_ATTR]}"
    if attrs.get(PLANNED_EPOCHS_ATTR):
        return f"cut to {attrs[PLANNED_EPOCHS_ATTR]} epochs to fit the budget"
    return ""
