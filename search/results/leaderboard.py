"""The study's trials as a table, best first, each in a few words (``trials/describe.py``): the
search's last lines and ``SearchResult.leaderboard()``."""

from __future__ import annotations

import optuna

from imgsearch.records import PARAM_COUNT_ATTR, PROMOTED_FROM_ATTR, family_of
from imgsearch.trials.describe import key_params, why
from imgsearch.trials.fidelity import fraction_of

COLUMNS = ["trial", "family", "params", "data", "epochs", "seconds", "parameters", "val", "state", "why"]
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
            "trial": trial.number, "family": family_of(trial), "params": key_params(trial), "data": fidelity(trial),
            "epochs": len(trial.intermediate_values), "seconds": None if duration is None else round(duration, 1),
            "parameters": trial.user_attrs.get(PARAM_COUNT_ATTR), "val": trial.value,
            "state": trial.state.name, "why": why(trial),
        })
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["parameters"] = table["parameters"].astype("Int64")
    table = table.sort_values(["val", "trial"], ascending=[False, True], na_position="last", ignore_index=True)
    return table if top is None else table.head(top)


def fidelity(trial: optuna.trial.FrozenTrial) -> str:
    """The share of the training images the trial trained on (``100%``, ``20%``), and the trial on
    fewer it was promoted from (search/trials/fidelity.py)."""
    share = f"{100 * fraction_of(trial):.0f}%"
    promoted = trial.user_attrs.get(PROMOTED_FROM_ATTR)
    return share if promoted is None else f"{share} (from {promoted})"
