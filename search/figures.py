"""Every figure the project draws, from plain values (no MLflow, Optuna or Keras objects): a
trial's learning curves (its MLflow run, its dashboard artifact), the confusion matrix (the
evaluation), and the report's curves of the best trials, best-so-far and parameter importances.

One convention: each function returns a bare ``matplotlib.figure.Figure`` (a constrained layout,
but for the per-trial one). No pyplot: no global figure registry to close, no backend to
select, safe in any thread. ``png`` turns one into bytes.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

Points = list[tuple[int, float]]  # (epoch from 0, value), as MLflow's metric history has them


def png(fig: Figure, dpi: int = 80) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def phase_starts(phases: Points) -> list[int]:
    """The epochs at which a new training phase starts, from a run's ``phase`` metric."""
    phases = sorted(phases)
    return [step for (step, phase), (_, before) in zip(phases[1:], phases) if phase != before]


def learning_curves(curves: dict[str, Points]) -> Figure:
    """One trial: loss and accuracy per epoch from ``curves`` keyed by metric name (loss,
    val_loss, accuracy, val_accuracy); a dotted line where a new phase starts (metric ``phase``).
    Drawn for every trial (its dashboard artifact): fixed margins, not a layout pass, which made
    it 0.19 s instead of 0.11 s a trial."""
    fig = Figure(figsize=(8, 3), dpi=80)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.16, top=0.9, wspace=0.25)
    starts = phase_starts(curves.get("phase", []))
    for ax, kind in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for step in starts:
            ax.axvline(step + 0.5, color="grey", linestyle=":")
        for key in (kind, f"val_{kind}"):
            points = sorted(curves.get(key, []))
            if points:
                steps, values = zip(*points)
                ax.plot([s + 1 for s in steps], values, marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(kind)
        ax.legend()
    return fig


def confusion_matrix(confusion: np.ndarray, class_names: list[str]) -> Figure:
    """True classes (rows) against predicted ones; class names up to 50 classes, counts up to 20."""
    n = len(class_names)
    size = min(4 + 0.4 * n, 40)
    fig = Figure(figsize=(size, size), layout="constrained")
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    if n <= 50:
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
    if n <= 20:
        dark = confusion.max() / 2  # white numbers on the darker cells
        for (i, j), count in np.ndenumerate(confusion):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > dark else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return fig


def top_trials_curves(trials: dict[str, dict[str, Points]]) -> Figure:
    """Several trials side by side (the report's best ones), keyed by their label: accuracy
    (val solid, train dashed) and loss; a trial's lines share a colour, and a dotted line in it
    marks where its next phase starts."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax, loss_ax = fig.subplots(1, 2)
    for label, curves in trials.items():
        color = None
        for axes, key, style in ((ax, "val_accuracy", "-"), (ax, "accuracy", "--"), (loss_ax, "val_loss", "-"),
                                 (loss_ax, "loss", "--")):
            points = sorted(curves.get(key, []))
            if points:
                line, = axes.plot([s + 1 for s, _ in points], [v for _, v in points], style, marker="o",
                                  markersize=3, color=color, label=f"{label} {key}")
                color = line.get_color()
        for step in phase_starts(curves.get("phase", [])):
            for axes in (ax, loss_ax):
                axes.axvline(step + 0.5, color=color, linestyle=":", alpha=0.7)
    for axes, label in ((ax, "accuracy"), (loss_ax, "loss")):
        axes.set_xlabel("epoch (dotted line: the next training phase begins)")
        axes.set_ylabel(label)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    ax.set_ylim(0, 1)
    return fig


def best_so_far(studies: dict[str, list[tuple[float, float]]]) -> Figure:
    """Each study's best validation accuracy against (seconds since its first trial started, best then)."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    for name, points in studies.items():
        if points:
            xs, ys = zip(*points)
            ax.step(xs, ys, where="post", marker="o", markersize=3, label=name)
    ax.set_xlabel("seconds since the study's first trial started")
    ax.set_ylabel("best val_accuracy so far")
    ax.set_ylim(0, 1)  # the whole scale: a gain of 0.007 looks as small as it is
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10, loc="lower right")
    return fig


def importances(values: dict[str, float]) -> Figure:
    """Parameter importances (Optuna's ``get_param_importances``), the most important on top."""
    names = list(values)[::-1]
    fig = Figure(figsize=(6, 0.35 * len(names) + 1.5), layout="constrained")
    ax = fig.subplots()
    ax.barh(names, [values[name] for name in names])
    ax.set_xlabel("importance for val_accuracy (fANOVA)")
    ax.set_title("Hyperparameter importances")
    ax.grid(axis="x", alpha=0.3)
    return fig
