"""``make report``: one self-contained HTML file (images embedded, opens offline) for the studies
of a study database and their MLflow runs.

Every figure comes from Optuna's record (trials, values, times; parameter importances with
Optuna's own evaluator and plot) or MLflow's (epoch curves, parameter counts, test scores,
the confusion matrix the evaluation logged); nothing is re-computed from models.
"""

from __future__ import annotations

import base64
import html
import json
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from imgsearch import figures
from imgsearch.ranking import best_of as best_trial_of, best_trial, ranked
from imgsearch.records import (BUDGET_ATTR, FAIL_REASON_ATTR, OBJECTIVE, PARENT_RUN_ATTR, PRUNE_REASON_ATTR,
                               RUN_ID_ATTR, SETTINGS_ATTR, family_of)
from imgsearch.results.leaderboard import leaderboard
from imgsearch.trials.describe import key_params

TOP_TRIALS = 3  # learning curves of this many best trials per study
TOP_TABLE = 10  # rows of a study's table of its best trials
WORST_CLASSES = 5
# fANOVA's ranking of a few trials is noise (5 trials once ranked label smoothing first, the
# backbone last): below this many complete trials the report says so instead of plotting it.
MIN_TRIALS_FOR_IMPORTANCES = 10
_STATES = ("COMPLETE", "PRUNED", "FAIL")
# What a study's settings block shows, in this order (the recorded settings; the budget from the study's attrs).
SHOWN_SETTINGS = ("dataset", "space", "epochs", "image_size", "sampler", "pruner", "explore_images", "seed")


@dataclass
class StudyReport:
    """What the report says of one study."""

    name: str
    dataset: str
    space: str
    counts: dict[str, int]
    best_value: float | None
    best_number: int | None
    param_count: int | None
    train_seconds: float  # the trials' own durations, summed (the compute spent)
    best_so_far: list[tuple[float, float]]  # (seconds since the first trial started, best value then)
    test: dict = field(default_factory=dict)  # top1, top5, per_class_accuracy, ... from the evaluation
    confusion_png: bytes | None = None
    importance_png: bytes | None = None
    curves_png: bytes | None = None
    families: list[dict] = field(default_factory=list)  # SPACE=auto: each family's best, trials and seconds
    settings: dict = field(default_factory=dict)  # SHOWN_SETTINGS and the budget, as the study recorded them
    winner: dict = field(default_factory=dict)  # the best trial: family, key params, every param
    top: list[dict] = field(default_factory=list)  # the best trials' leaderboard rows
    reasons: list[dict] = field(default_factory=list)  # pruned and failed trials grouped: state, reason, count
    source: str = ""  # the study database it was read from (a report may hold several)


def collect(study: optuna.Study, client: MlflowClient | None) -> StudyReport:
    """Read one study's report from Optuna and (when ``client``) its MLflow runs."""
    trials = study.get_trials(deepcopy=False)
    settings = study.user_attrs.get(SETTINGS_ATTR, {})
    counts = {state: sum(t.state.name == state for t in trials) for state in _STATES}
    best = best_trial(study)
    report = StudyReport(
        name=study.study_name, dataset=str(settings.get("dataset", "?")), space=str(settings.get("space", "?")),
        counts=counts, best_value=best.value if best else None, best_number=best.number if best else None,
        param_count=None, train_seconds=sum(_seconds(t) for t in trials if t.state.is_finished()),
        best_so_far=_best_so_far(trials),
    )
    report.importance_png = _importances(study)
    report.families = _families(trials) if report.space == "auto" else []
    report.settings = {**{key: settings.get(key) for key in SHOWN_SETTINGS},
                       "budget": study.user_attrs.get(BUDGET_ATTR)}
    report.top = leaderboard(study, top=TOP_TABLE).to_dict("records")
    report.reasons = grouped_reasons(trials)
    if best is not None:
        report.winner = {"trial": best.number, "family": family_of(best), "model": key_params(best),
                         "params": dict(best.params)}
    if client is None:
        return report
    if best is not None and best.user_attrs.get(RUN_ID_ATTR):
        count = _run_metric(client, best.user_attrs[RUN_ID_ATTR], "param_count")
        report.param_count = int(count) if count is not None else None
    report.test, report.confusion_png = _evaluation(client, study.user_attrs.get(PARENT_RUN_ATTR))
    report.curves_png = _learning_curves(client, study, trials)
    return report


def grouped_reasons(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    """Pruned and failed trials by why, most first: {state, reason, count, example}. A reason is
    its recorded text up to its first ':', '(' or ' after epoch' ("by hyperband", "cannot finish",
    "too slow", "WeightsUnavailable"), so trials stopped for the same cause count together."""
    groups: dict[tuple[str, str], list[str]] = {}
    for trial in trials:
        if trial.state.name not in ("PRUNED", "FAIL"):
            continue
        text = trial.user_attrs.get(PRUNE_REASON_ATTR if trial.state.name == "PRUNED" else FAIL_REASON_ATTR) or ""
        reason = re.split(r":|\(| after epoch", text, maxsplit=1)[0].strip() or "no reason recorded"
        groups.setdefault((trial.state.name, reason), []).append(text)
    rows = [{"state": state, "reason": reason, "count": len(texts), "example": texts[0]}
            for (state, reason), texts in groups.items()]
    return sorted(rows, key=lambda r: (-r["count"], r["state"], r["reason"]))


def _families(trials: list[optuna.trial.FrozenTrial]) -> list[dict]:
    """Per family of a SPACE=auto study (its ``family`` param), best first: the best value and
    trial, the finished trials and the seconds they took."""
    by_family: dict[str, list] = {}
    for trial in trials:
        if trial.state.is_finished() and family_of(trial):
            by_family.setdefault(family_of(trial), []).append(trial)
    rows = []
    for family, members in by_family.items():
        best = best_trial_of(members)
        rows.append({"family": family, "best": best.value if best else None, "best_trial": best.number if best else None,
                     "trials": len(members), "complete": sum(t.state.name == "COMPLETE" for t in members),
                     "seconds": sum(_seconds(t) for t in members)})
    return sorted(rows, key=lambda r: -(r["best"] or -1))


def _seconds(trial: optuna.trial.FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def _best_so_far(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[float, float]]:
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    if not starts:
        return []
    first, best, points = min(starts), None, []
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    for trial in sorted(complete, key=lambda t: t.datetime_complete or datetime.max):
        if best is None or trial.value > best:
            best = trial.value
        points.append(((trial.datetime_complete - first).total_seconds(), best))
    return points


def _importances(study: optuna.Study) -> bytes | None:
    """Optuna's parameter importances (fANOVA) as a figure; None below MIN_TRIALS_FOR_IMPORTANCES
    complete trials or while too few of them vary."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCES:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            values = optuna.importance.get_param_importances(study)
    except (RuntimeError, ValueError):
        return None  # e.g. no parameter took two values among the complete trials
    return figures.png(figures.importances(values)) if values else None


def _run_metric(client: MlflowClient, run_id: str, key: str) -> float | None:
    try:
        return client.get_run(run_id).data.metrics.get(key)
    except MlflowException:
        return None


def _evaluation(client: MlflowClient, parent_run_id: str | None) -> tuple[dict, bytes | None]:
    """The test scores and confusion matrix the evaluation logged on the study's parent run."""
    if not parent_run_id:
        return {}, None
    with tempfile.TemporaryDirectory() as folder:
        try:
            local = Path(client.download_artifacts(parent_run_id, "evaluation", folder))
        except (MlflowException, OSError):
            return {}, None
        scores = local / "evaluation.json"
        confusion = local / "confusion_matrix.png"
        return (json.loads(scores.read_text()) if scores.is_file() else {},
                confusion.read_bytes() if confusion.is_file() else None)


def _learning_curves(client: MlflowClient, study: optuna.Study, trials) -> bytes | None:
    """The learning curves of the best complete trials, from MLflow."""
    top = [t for t in ranked(trials) if t.user_attrs.get(RUN_ID_ATTR)][:TOP_TRIALS]
    if not top:
        return None

    def curves(run_id: str) -> dict:
        return {key: [(m.step, m.value) for m in _history(client, run_id, key)]
                for key in (OBJECTIVE, "accuracy", "val_loss", "loss", "phase")}

    return figures.png(figures.top_trials_curves({f"trial {t.number}": curves(t.user_attrs[RUN_ID_ATTR]) for t in top}))


def _history(client: MlflowClient, run_id: str, key: str) -> list:
    try:
        return sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    except MlflowException:
        return []


def best_so_far_plot(reports: list[StudyReport]) -> bytes:
    """Every study's best validation accuracy against the seconds since its first trial started."""
    return figures.png(figures.best_so_far({report.name: report.best_so_far for report in reports}))


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return f"<p class='none'>{html.escape(alt)}: not available</p>"
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _cell(report: StudyReport, field_name: str, value, digits: int = 4) -> str:
    return f"<td data-study='{html.escape(report.name)}' data-field='{field_name}'>{_fmt(value, digits)}</td>"


def _summary_row(r: StudyReport) -> str:
    return ("<tr>" + f"<td>{html.escape(r.name)}</td><td>{html.escape(r.dataset)}</td><td>{html.escape(r.space)}</td>"
            + _cell(r, "complete", r.counts["COMPLETE"]) + _cell(r, "pruned", r.counts["PRUNED"])
            + _cell(r, "failed", r.counts["FAIL"]) + _cell(r, "best_value", r.best_value)
            + _cell(r, "best_trial", r.best_number) + _cell(r, "test_top1", r.test.get("top1"))
            + _cell(r, "test_top5", r.test.get("top5")) + _cell(r, "param_count", r.param_count)
            + _cell(r, "train_seconds", r.train_seconds, 0) + "</tr>")


def _spaces_by_dataset(reports: list[StudyReport]) -> str:
    """Per dataset, the spaces searched on it side by side (best first)."""
    parts = []
    for dataset in sorted({r.dataset for r in reports}):
        rows = sorted((r for r in reports if r.dataset == dataset), key=lambda r: -(r.best_value or -1))
        body = "".join(
            f"<tr><td>{html.escape(r.space)}</td><td>{_fmt(r.best_value)}</td><td>{_fmt(r.test.get('top1'))}</td>"
            f"<td>{_fmt(r.param_count)}</td><td>{r.counts['COMPLETE'] + r.counts['PRUNED']}</td>"
            f"<td>{_fmt(r.train_seconds, 0)}</td></tr>" for r in rows)
        parts.append(f"<h3>{html.escape(dataset)}</h3><table><tr><th>space</th><th>best val_accuracy</th>"
                     f"<th>test top-1</th><th>parameters</th><th>trials</th><th>all trials' s</th></tr>{body}</table>")
    return "".join(parts)


def _families_table(r: StudyReport) -> str:
    if not r.families:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(f['family'])}</td>{_cell(r, 'family_best', f['best'])}"
        f"<td>{_fmt(f['best_trial'])}</td><td>{f['complete']} / {f['trials']}</td><td>{f['seconds']:.0f}</td></tr>"
        for f in r.families)
    return ("<h3>Families side by side</h3><table class='families'><tr><th>family</th><th>best val_accuracy</th>"
            f"<th>best trial</th><th>complete / finished trials</th><th>seconds</th></tr>{rows}</table>")


def _settings_block(r: StudyReport) -> str:
    classes = len(r.test.get("per_class_accuracy", {})) or None
    shown = {**r.settings, "classes": classes, "test images": r.test.get("n_test")}
    rows = "".join(f"<tr><th>{html.escape(key)}</th>{_cell(r, 'setting_' + key.replace(' ', '_'), value)}</tr>"
                   for key, value in shown.items())
    return f"<div><h3>Settings</h3><table class='settings'>{rows}</table></div>"


def _winner_block(r: StudyReport) -> str:
    if not r.winner:
        return "<div><h3>Winner</h3><p class='none'>no complete trial</p></div>"
    w = r.winner
    params = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(_fmt(v))}</td></tr>" for k, v in w["params"].items())
    family = f" ({html.escape(w['family'])})" if w["family"] else ""
    return (f"<div><h3>Winner: trial {_span(r, 'winner_trial', w['trial'])}{family}</h3>"
            f"<p>{_span(r, 'winner_model', w['model'])}</p><table class='params'>{params}</table></div>")


def _span(r: StudyReport, field_name: str, value) -> str:
    return f"<span data-study='{html.escape(r.name)}' data-field='{field_name}'>{html.escape(_fmt(value))}</span>"


def _top_table(r: StudyReport) -> str:
    header = ("<tr><th>trial</th><th>family</th><th>model</th><th>val_accuracy</th><th>test top-1</th>"
              "<th>test top-5</th><th>training data</th><th>epochs</th><th>seconds</th><th>parameters</th><th>state</th>"
              "<th>why</th></tr>")
    rows = []
    for row in r.top:
        exported = row["trial"] == r.best_number
        test = (_fmt(r.test.get("top1")), _fmt(r.test.get("top5"))) if exported else ("", "")
        cells = [row["trial"], row["family"] or "", row["params"], _fmt(_number(row["val"])), *test, row["data"],
                 row["epochs"],
                 _fmt(_number(row["seconds"]), 0), _fmt(_number(row["parameters"])), row["state"], row["why"]]
        rows.append(f"<tr data-study='{html.escape(r.name)}' data-trial='{row['trial']}'>"
                    + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return (f"<h3>The {len(r.top)} best trials (test scores: the exported model)</h3>"
            f"<table class='top'>{header}{''.join(rows)}</table>")


def _number(value):
    """A table value as a Python number, None for pandas' and NumPy's missing values."""
    if value is None or value != value or str(value) == "<NA>":
        return None
    return float(value) if isinstance(value, float) or hasattr(value, "dtype") and value.dtype.kind == "f" else int(value)


def _reasons_table(r: StudyReport) -> str:
    if not r.reasons:
        return "<h3>Why trials were pruned or failed</h3><p class='none'>none was</p>"
    rows = "".join(f"<tr data-study='{html.escape(r.name)}' data-reason='{html.escape(g['reason'])}'>"
                   f"<td>{g['state'].lower()}</td><td>{html.escape(g['reason'])}</td><td>{g['count']}</td>"
                   f"<td>{html.escape(g['example'])}</td></tr>" for g in r.reasons)
    return ("<h3>Why trials were pruned or failed</h3><table class='reasons'><tr><th>state</th><th>reason</th>"
            f"<th>trials</th><th>for example</th></tr>{rows}</table>")


def _study_section(r: StudyReport) -> str:
    worst = sorted(r.test.get("per_class_accuracy", {}).items(), key=lambda kv: kv[1])[:WORST_CLASSES]
    worst_rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{acc:.3f}</td></tr>" for name, acc in worst)
    complete = r.counts["COMPLETE"]
    importances = (_img(r.importance_png, "parameter importances") if r.importance_png is not None else
                   f"<p class='few'>{complete} complete trial{'s' if complete != 1 else ''}: too few to rank the "
                   f"parameters (the report ranks them from {MIN_TRIALS_FOR_IMPORTANCES} on)</p>")
    source = f"<p>{html.escape(r.source)}</p>" if r.source else ""
    return (f"<section><h2>{html.escape(r.name)}</h2>{source}<div class='row'>{_settings_block(r)}"
            f"{_winner_block(r)}</div>{_top_table(r)}{_reasons_table(r)}{_families_table(r)}<div class='row'>"
            f"<div><h3>Parameter importances</h3>{importances}</div>"
            f"<div><h3>Learning curves of the top {TOP_TRIALS} trials</h3>{_img(r.curves_png, 'learning curves')}</div>"
            f"<div><h3>Confusion matrix (test, exported model)</h3>{_img(r.confusion_png, 'confusion matrix')}</div>"
            f"<div><h3>Worst classes (test accuracy)</h3><table>{worst_rows or '<tr><td>-</td></tr>'}</table></div>"
            "</div></section>")


_STYLE = """body{font-family:sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:.5em 0}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}td:first-child,th:first-child{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:2em}.none{color:#888}img{max-width:100%}"""


def render(reports: list[StudyReport], source: str) -> str:
    """The whole HTML page."""
    header = ("<tr><th>study</th><th>dataset</th><th>space</th><th>complete</th><th>pruned</th><th>failed</th>"
              "<th>best val_accuracy</th><th>best trial</th><th>test top-1</th><th>test top-5</th>"
              "<th>parameters</th><th>all trials' s</th></tr>")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Search report</title><style>{_STYLE}</style>"
            f"</head><body><h1>Search report</h1><p>{html.escape(source)}, {datetime.now():%Y-%m-%d %H:%M}. "
            "All trials' s: the trials' own durations, summed (the compute the study spent); parameters: the best "
            "trial's model. Test scores are the exported model's.</p>"
            f"<table id='studies'>{header}{''.join(_summary_row(r) for r in reports)}</table>"
            f"<h2>Best so far</h2>{_img(best_so_far_plot(reports), 'best so far')}"
            f"<h2>Spaces side by side</h2>{_spaces_by_dataset(reports)}"
            f"{''.join(_study_section(r) for r in reports)}</body></html>")


def write_report(sources: list[tuple[optuna.storages.BaseStorage, str | None, str]], out: Path) -> int:
    """Write the report of every study of each (study storage, tracking URI, what to call it) to
    ``out``; return how many studies it has. With several sources, a study's name in the report
    is prefixed with its source's, so two runs folders' ``digits-mlp`` stay apart."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    reports = []
    for storage, tracking_uri, source in sources:
        client = MlflowClient(tracking_uri) if tracking_uri else None
        for name in sorted(optuna.get_all_study_names(storage)):
            report = collect(optuna.load_study(study_name=name, storage=storage), client)
            report.source = source
            if len(sources) > 1:
                report.name = f"{source}: {name}"
            reports.append(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(reports, ", ".join(source for _, _, source in sources)))
    return len(reports)
