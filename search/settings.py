"""Every setting, declared once, as a typed field of ``Settings``: its name, type, default,
accepted values, help, the commands that read it and the space it belongs to. ``resolve``
checks given values and returns a ``Settings``, which the commands read (``settings.budget``).
The command line's flags and environment variables (``search/command_line/main.py``), the
Python API's keyword arguments, the study's defaults and recorded keys
(``search/trials/study.py``), each space's default options and the README's table of settings
(``python -m imgsearch.settings``; ``tests/test_settings.py`` compares) all follow from it.

A new setting is one field line in ``Settings``; a space's option is also a field of its
space's dataclass (its constructor argument; the default is the setting's). This module
imports nothing heavy (no Keras, Optuna or MLflow): a bad value is refused in well under a
second, before TensorFlow starts.
"""

from __future__ import annotations

import base64
import difflib
import math
import os
import re
import typing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from imgsearch.spaces.catalog import FAMILY_NAMES, SPACE_NAMES, parse_backbones, parse_families
from imgsearch.spaces.scale import LARGE_IMAGES
from imgsearch.choices import DATASETS, PRUNERS, SAMPLERS
from imgsearch.storage import DB_RETRY_SECONDS
from imgsearch.storage.errors import UserError
from imgsearch.storage.urls import check_database_url, mask_url

# Study names become folder and file names (checkpoints, exports, MLflow artifacts) and the
# registered model's name: one path segment, short enough for any file system.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MLFLOW_PROBE_TIMEOUT_S = 5

COMMANDS = ("search", "worker", "export", "evaluate", "predict", "report", "dashboard", "mlflow", "clean")
TRAINING = ("search", "worker")  # the commands that run trials
COMMAND_HELP = {
    "search": "run (or resume) a study, then export and evaluate its best model (the default)",
    "worker": "join a study another process created and add trials to it",
    "export": "write the best trial's model to RUNS_DIR/exports/<study>/ and register it in MLflow",
    "evaluate": "score the exported model on the test split",
    "predict": "classify IMAGES (a file, folder or zip) with the export or MODEL; a CSV of the top classes",
    "report": "one HTML page on every study in the study database",
    "dashboard": "serve the Optuna dashboard on the study database",
    "mlflow": "serve the MLflow UI on the tracking store and print each study's link",
    "clean": "delete RUNS_DIR (only a runs folder this project made)",
}
ON_A_STUDY = ("search", "worker", "export", "evaluate")  # the commands that open one study and its data


@dataclass(frozen=True)
class Setting:
    """One setting: flag ``--name`` (dashes for underscores) and environment variable ``NAME``.

    ``default`` is the value used when the setting is not given (None: not set);
    ``default_text`` says it in words where it depends on other things. ``low``/``high``
    bound it inclusively, ``above`` exclusively, ``choices`` lists the values it takes,
    ``check`` is a check of its own raising UserError. ``study``: recorded in the study when
    it is created, and fixed for it from then on. ``space``: an option of that search space, or
    of those spaces (a field of each one's dataclass).
    """

    name: str
    kind: type
    help: str
    default: object = None
    default_text: str | None = None
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[str, object], None] | None = None
    commands: tuple[str, ...] = ON_A_STUDY
    study: bool = False
    space: str | tuple[str, ...] | None = None

    @property
    def spaces(self) -> tuple[str, ...]:
        """The spaces this is an option of (none for a setting of the commands)."""
        return (self.space,) if isinstance(self.space, str) else self.space or ()

    @property
    def unset_is_default(self) -> bool:
        """Whether a setting not given simply takes ``default``. Not so for what a study records (its
        record fills it in) or a space's option (``space_defaults``), nor where the default depends
        on other settings (``default_text``): those stay None when not given."""
        return not self.study and self.space is None and self.default_text is None

    @property
    def env(self) -> str:
        return self.name.upper()

    @property
    def flag(self) -> str:
        return f"--{self.name.replace('_', '-')}"

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if self.default is None:
            return "none"
        return _number(self.default) if isinstance(self.default, float) else str(self.default)

    def parse(self, text: str):
        """``text`` (from the environment) as this setting's type; UserError when it is not one."""
        try:
            return self.kind(text)
        except ValueError:
            raise UserError(f"{self.env}={text!r} is not a valid {self.kind.__name__}") from None

    def validate(self, value) -> None:
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{self.env}={value}: must be a finite number")
        shown = _number(value) if isinstance(value, float) else value
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            bounds = (f"from {_number(self.low)} to {_number(self.high)}" if self.high is not None
                      else f"at least {_number(self.low)}")
            raise UserError(f"{self.env}={shown}: must be {bounds}")
        if self.above is not None and not value > self.above:
            raise UserError(f"{self.env}={shown}: must be more than {_number(self.above)}")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"unknown {self.env} {value!r}; choose one of: {', '.join(self.choices)}")
        if self.check is not None:
            self.check(self.env, value)


SETTING = "setting"  # where a field of ``Settings`` keeps its declaration


def setting(help: str, **declared) -> Any:
    """A field of ``Settings``, None until resolved, declared with ``help`` and ``Setting``'s
    other fields (``default``, ``choices``, ``study``...) but its name and type: the field's."""
    return field(default=None, metadata={SETTING: {"help": help, **declared}})


def _settings_of(cls) -> Iterator[Setting]:
    """The ``Setting`` of each declared field of ``cls``, in order; its kind is the field's type."""
    hints = typing.get_type_hints(cls)
    for declared in fields(cls):
        if SETTING in declared.metadata:
            kind = next(t for t in typing.get_args(hints[declared.name]) if t is not type(None))
            yield Setting(declared.name, kind, **declared.metadata[SETTING])


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_study_name(env: str, name: str) -> None:
    if not STUDY_NAME.fullmatch(name):
        raise UserError(f"{env}={name[:120]!r}: use up to 100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (it names folders and the registered model)")


def check_tracking_uri(env: str, uri: str) -> None:
    """An MLflow server that answers, a database URL MLflow can use, or Databricks.

    MLflow's file store (``file:`` or a bare path) is refused: MLflow 3 itself refuses it
    ("maintenance mode") unless told otherwise, and says so with a traceback. An unreachable
    server is found here, in at most 5 s, rather than after MLflow's own retries (minutes)
    with the study already created.
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        # user:password@ in the URL is MLflow's basic auth (its client sends it so): urllib would
        # take it for part of the host name, so it goes in a header here.
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        request = urllib.request.Request(bare.rstrip("/") + "/health")
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            request.add_header("Authorization", "Basic " + base64.b64encode(credentials).decode())
        try:
            with urllib.request.urlopen(request, timeout=MLFLOW_PROBE_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:
            raise UserError(f"{env} {mask_url(uri)}: not an MLflow server (/health answered HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{env} {mask_url(uri)}: no MLflow server answers there ({reason})") from None
    if scheme.startswith("databricks"):
        return
    if scheme in ("", "file"):
        raise UserError(f"{env}={uri}: MLflow 3 no longer takes a file store; use a database "
                        "(sqlite:///path/mlflow.db) or a tracking server (http://host:5000)")
    check_database_url(env, uri)


def check_folder(env: str, folder: str) -> None:
    if not Path(folder).expanduser().is_dir():
        raise UserError(f"{env} {folder}: no such folder (expected train/<class>/* and validation/<class>/* in it)")


def check_backbones(env: str, text: str) -> None:
    parse_backbones(text)


def check_families(env: str, text: str) -> None:
    parse_families(text)


@dataclass
class Settings:
    """Every setting, typed: what ``resolve`` returns and every command reads (``settings.epochs``).
    Each field is declared once, here, with its ``Setting`` (``setting(...)``: help, default,
    accepted values, commands, space); a value is None when not set. The choices of DATASET,
    SAMPLER and PRUNER are search/choices.py's names, SPACE's and the backbones' the catalog's:
    light registries, read here before anything heavy loads."""

    # What a study is: recorded when it is created.
    dataset: str | None = setting("the dataset", default_text="required for a new study", study=True,
        choices=DATASETS)
    space: str | None = setting("search space: auto searches the families side by side, the others one family each",
        default="auto", study=True, choices=SPACE_NAMES)
    epochs: int | None = setting("epochs a trial plans (fewer when cut to fit the budget or pruned)", default=15,
        low=1, study=True)
    image_size: int | None = setting("resize images to this square size, 8 to 512", default_text="the dataset's own",
        low=8, high=512, study=True)
    labels: str | None = setting("cifar100's labels", default="fine", choices=("fine", "coarse"), study=True)
    folder: str | None = setting("root of a DATASET=folder tree: train/<class>/*, validation/<class>/*", study=True,
        check=check_folder)
    sampler: str | None = setting("Optuna sampler (gp needs pip install '.[gp]', i.e. PyTorch)", default="tpe",
        choices=SAMPLERS, study=True)
    pruner: str | None = setting("Optuna pruner on per-epoch validation accuracy (hyperband's first rung is after a "
        "third of EPOCHS)", default="hyperband", choices=PRUNERS, study=True)
    explore_images: int | None = setting("a sampled trial on more training images than this (counted as 32x32 ones) "
        "trains on this many of them, and the best third are trained again on all (0: all, always)", default=LARGE_IMAGES,
        low=0, study=True)
    seed: int | None = setting("seed for the sampler and per-trial Keras seeds", low=0, high=2**32 - 1, study=True)
    # How long a search runs.
    trials: int | None = setting("finished (complete or pruned) trials the study should reach", default=20,
        default_text="20 without a BUDGET, no limit with one", low=1, commands=TRAINING)
    budget: float | None = setting("seconds of training; then the search exports and evaluates the best (data "
        "preparation not counted)", above=0, commands=TRAINING)
    timeout: float | None = setting("the same as BUDGET (its older name)", above=0, commands=TRAINING)
    max_epoch_seconds: float | None = setting("prune a trial whose epoch would take longer; an epoch is projected from "
        "its first batches (0: no limit)", default_text="20x the median epoch of the study's complete trials, "
        "at least 60 s", low=0, commands=TRAINING)
    # Where things are.
    study: str | None = setting("study name: up to 100 letters, digits, '.', '_', '-'",
        default_text="<dataset>-<space>", check=check_study_name, commands=ON_A_STUDY)
    storage: str | None = setting("SQLAlchemy URL of the study database", default_text="sqlite in RUNS_DIR",
        check=check_database_url, commands=(*ON_A_STUDY, "report", "dashboard"))
    mlflow_tracking_uri: str | None = setting("MLflow tracking server, database URL or Databricks",
        default_text="sqlite in RUNS_DIR", check=check_tracking_uri, commands=(*ON_A_STUDY, "report", "mlflow"))
    runs_dir: str | None = setting("where databases, checkpoints and exports live", default="runs", commands=COMMANDS)
    data_dir: str | None = setting("where datasets are found, downloaded and cached", default="data")
    report: str | None = setting("the HTML file to write", default_text="RUNS_DIR/report.html", commands=("report",))
    runs_dirs: str | None = setting("more runs folders, comma-separated, whose studies the report shows beside "
        "RUNS_DIR's", commands=("report",))
    # Classifying new images.
    images: str | None = setting("an image file, a folder of them or a zip, to classify", commands=("predict",))
    model: str | None = setting("the exported model.keras to classify with (model.json beside it)",
        default_text="the study's export", commands=("predict",))
    top_k: int | None = setting("classes to name per image", default=5, low=1, commands=("predict",))
    predictions: str | None = setting("the CSV file the predictions are written to",
        default_text="RUNS_DIR/predictions.csv", commands=("predict",))
    # How the trials run.
    workers: int | None = setting("run the trials in this many local worker processes", default=1, low=1,
        commands=("search",))
    heartbeat: int | None = setting("seconds between a running trial's heartbeats; one silent for 3 is retried",
        default=10, low=1, commands=TRAINING)
    db_retry: float | None = setting("seconds to keep retrying a study database that cannot be reached before stopping",
        default=DB_RETRY_SECONDS, low=0, commands=ON_A_STUDY)
    trials_per_process: int | None = setting("continue in a fresh process after this many trials (0: never)",
        default=25, low=0, commands=TRAINING)
    # Each space's options: fields of its dataclass, recorded in the study with it.
    families: str | None = setting("families of models to search, comma-separated: " + ", ".join(FAMILY_NAMES),
        default_text="those that can run here, decided when the study is created", check=check_families,
        space="auto")
    max_blocks: int | None = setting("most conv blocks", default=4, low=1, high=8, space=("cnn", "auto"))
    max_layers: int | None = setting("most hidden dense layers", default=4, low=1, high=8, space="mlp")
    backbones: str | None = setting("backbones or families to choose from, comma-separated", default_text="all",
        check=check_backbones, space=("finetune", "transfer", "auto"))
    weights: str | None = setting("ImageNet weights, or none (random initialisation)", default="imagenet",
        choices=("imagenet", "none"), space=("finetune", "transfer", "auto"))
    weights_dir: str | None = setting("folder of Keras weight files, used instead of downloading",
        space=("finetune", "transfer", "auto"))
    max_model_size: int | None = setting("prune a trial whose model has more parameters, before training", low=1,
        space=("autokeras", "auto"))
    pretrained: str | None = setting("use AutoKeras's pretrained blocks (no: leave them out)", default="yes",
        choices=("yes", "no"), space=("autokeras", "auto"))
    # The dashboards.
    host: str | None = setting("address the dashboards listen on (the dashboard's notes link to the MLflow UI there)",
        default="127.0.0.1", commands=("dashboard", "mlflow", *TRAINING))
    dashboard_port: int | None = setting("port of the Optuna dashboard", default=8080, low=1, high=65535,
        commands=("dashboard",))
    mlflow_port: int | None = setting("port of the MLflow UI (the dashboard's notes link to it)", default=5000, low=1,
        high=65535, commands=("mlflow", *TRAINING))

    command: str = "search"  # the command line's command (not a setting)


SETTINGS = tuple(_settings_of(Settings))
BY_NAME = {setting.name: setting for setting in SETTINGS}
STUDY_KEYS = tuple(setting.name for setting in SETTINGS if setting.study)


def default(name: str):
    """The value of setting ``name`` when it is not given."""
    return BY_NAME[name].default


def space_defaults(space: str) -> dict:
    """The options of ``space`` as they are when none is given."""
    return {s.name: s.default for s in SETTINGS if space in s.spaces}


def resolve(given: dict) -> Settings:
    """Every setting by name: the ``given`` value, checked, or when not given what it is then
    (``Setting.unset_is_default``: its default, else None for the study's record or the space to
    fill in). The command line and the Python API both take their settings from here; a name
    that is no setting is a UserError that suggests the closest one."""
    for name in given:
        if name not in BY_NAME:
            close = difflib.get_close_matches(name, list(BY_NAME), n=1, cutoff=0.7)
            raise UserError(f"{name!r} is not a setting" + (f" (did you mean {close[0]!r}?)" if close else ""))
    values = {}
    for setting in SETTINGS:
        value = given.get(setting.name)
        if value is None:
            value = setting.default if setting.unset_is_default else None
        elif setting.kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif setting.kind is str and isinstance(value, os.PathLike):
            value = os.fspath(value)
        elif not isinstance(value, setting.kind) or isinstance(value, bool) and setting.kind is not bool:
            raise UserError(f"{setting.env}={value!r}: must be a{'n' if setting.kind is int else ''} "
                            f"{setting.kind.__name__}")
        if value is not None:
            setting.validate(value)
        values[setting.name] = value
    return Settings(**values)


def from_env(name: str):
    """Setting ``name`` from its environment variable, checked, or its default."""
    setting = BY_NAME[name]
    text = os.environ.get(setting.env)
    if not text:
        return setting.default
    value = setting.parse(text)
    setting.validate(value)
    return value


def misspelt(environ: dict[str, str]) -> list[str]:
    """A line for each variable in ``environ`` that is not a setting but reads like one
    (``BUGDET``, ``TRAILS``): make passes every variable on, so a misspelt one would be
    silently ignored. Close means a similarity above 0.82 (``PORT`` is not ``REPORT``)."""
    names = [s.env for s in SETTINGS]
    lines = []
    for key in sorted(environ):
        if key in names or not environ[key] or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            continue
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.82)
        if close:
            lines.append(f"{key} is not a setting (did you mean {close[0]}?); it is ignored")
    return lines


def help_text(setting: Setting) -> str:
    scope = f"{'/'.join(setting.spaces)}: " if setting.space else ""
    choices = f"; one of {', '.join(setting.choices)}" if setting.choices else ""
    return f"{scope}{setting.help}{choices} (default {setting.shown_default()}; variable {setting.env})"


def markdown_table() -> str:
    """The README's table of settings."""
    lines = ["| variable | meaning | default | read by |", "|---|---|---|---|"]
    for s in SETTINGS:
        meaning = (f"{'/'.join(s.spaces)} space{'s' if len(s.spaces) > 1 else ''}: " if s.space else "") + s.help
        if s.choices:
            meaning += ": " + ", ".join(f"`{c}`" for c in s.choices)
        read_by = ", ".join(f"`SPACE={x}`" for x in s.spaces) if s.space else ", ".join(s.commands)
        shown = s.default_text or ("none" if s.default is None else f"`{s.shown_default()}`")
        lines.append(f"| `{s.env}` | {meaning} | {shown} | {read_by} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # the README's table; with --value NAME, the setting's value here
    import sys

    if sys.argv[1:2] == ["--value"]:
        print(from_env(sys.argv[2]))
    else:
        print(markdown_table(), end="")
