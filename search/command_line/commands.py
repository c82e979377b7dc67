"""What each command does: search (then export and evaluate), worker, export, evaluate, predict,
report, clean (and ``dashboards.py``: dashboard, mlflow). Each takes the resolved settings
(``search.settings.resolve``); the command line and the Python API (``search/api.py``) call them.

Everything a command can check without TensorFlow is checked first: RUNS_DIR, the study
database, the study's record and the settings against it. Keras, MLflow and the spaces are
imported only after that (``_heavy``), so a bad value or an unreachable database is one line
in about a second, not after TensorFlow's start-up.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import optuna

from imgsearch.command_line.local_workers import check_worker_count, run_local_workers, worker_environment
from imgsearch.datasets import Dataset, DatasetSpec
from imgsearch.datasets.arrays import NAME as ARRAYS
from imgsearch.records import (BUDGET_ATTR, FINGERPRINT, FRACTION_ATTR, INFO_FILE, INTERRUPTED_ATTR, LOCAL_WORKER,
                               MODEL_FILE, PROMOTED_FROM_ATTR, RETRY_OF_ATTR)
from imgsearch.results.leaderboard import SHOWN
from imgsearch.settings import SETTINGS, STUDY_KEYS, Settings, default
from imgsearch.storage.errors import UserError
from imgsearch.storage.layout import RunsLayout
from imgsearch.storage.optuna_storage import open_storage
from imgsearch.storage.urls import default_storage_url, mask_url

PREDICTIONS_SHOWN = 20  # images `predict` prints; the CSV has them all

# Set for the processes a search continues in (TRIALS_PER_PROCESS): the BUDGET it began with.
BUDGET_TOTAL = "IMGSEARCH_BUDGET_TOTAL"


def _quiet_libraries() -> None:
    """Our progress lines replace Optuna's and MLflow's per-trial logging (a failed trial's
    traceback goes to its MLflow run, not the console)."""
    import logging
    import warnings

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"])  # search/__init__.py says why


_quiet_libraries()


@dataclass
class Context:
    """Everything a command needs, resolved from flags, environment and the study's record."""

    layout: RunsLayout
    storage_url: str
    storage: optuna.storages.BaseStorage
    study_name: str
    settings: dict
    exists: bool
    spec: DatasetSpec | None  # None for a study on arrays
    space: object  # a spaces.SearchSpace
    data_dir: Path
    tracking_uri: str
    data: Dataset | None = None  # data already in memory: the Python API's arrays, or a dataset loaded once
    mlflow_ui: str = ""  # where the dashboard's notes link to: a tracking server, else where `make mlflow` serves

    @property
    def params(self) -> dict:
        """The study's settings and its space's, flat: what every MLflow run logs as fixed params."""
        from imgsearch.trials.study import run_params

        return run_params(self.settings, self.space)

    def load_data(self) -> Dataset:
        return self.data if self.data is not None else self.spec.load(self.data_dir)

    def open_study(self) -> optuna.Study:
        from imgsearch.trials.study import open_study

        return open_study(self.storage, self.study_name, self.settings, self.exists)

    def checkpoint(self):
        from imgsearch.trials.checkpoints import BestCheckpoint

        return BestCheckpoint(self.layout.checkpoints(self.study_name))

    def tracker(self, study: optuna.Study):
        from imgsearch.trials.tracking import Tracker

        # A tracking server stores artifacts itself; any other store keeps them in RUNS_DIR.
        served = self.tracking_uri.startswith(("http://", "https://", "databricks"))
        return Tracker(self.tracking_uri, study, self.params, None if served else self.layout.mlflow_artifacts,
                       mlflow_ui=self.mlflow_ui, optuna_artifacts=self.layout.optuna_artifacts)


def _context(args: Settings, creating: bool, data: Dataset | None = None) -> Context:
    """The command's context. Only ``search`` (``creating``) creates RUNS_DIR and the default
    study database; the others find them or stop with one line, leaving nothing behind.
    ``data``: the data, already in memory: a study on arrays (``Dataset.fingerprint`` names
    them), or DATASET loaded once for several searches (the tests and benchmarks)."""
    layout = RunsLayout(Path(args.runs_dir))
    if not creating and not args.storage:
        layout.check_study_db()
    if args.dataset and data is None:  # before RUNS_DIR is made; a study's recorded dataset is checked once read
        DatasetSpec(args.dataset, args.image_size, args.labels or default("labels"), args.folder).check_data_dir(
            Path(args.data_dir))
    layout.ensure_writable()
    storage_url = args.storage or default_storage_url(layout.study_db)
    with layout.setting_up():  # two processes creating one SQLite schema at once collide
        if not args.storage:
            layout.check_not_empty()
        storage = open_storage(storage_url, heartbeat=args.heartbeat, retry_seconds=args.db_retry)
        # and one reading the study while another is creating it would find it without its settings
        return _resolve(args, creating, layout, storage_url, storage, data)


def _study_names(storage: optuna.storages.BaseStorage, storage_url: str) -> list[str]:
    try:
        return optuna.get_all_study_names(storage)
    except optuna.exceptions.StorageInternalError as exc:  # e.g. a file that is not a database
        cause = str(exc.__cause__ or exc).strip().splitlines()[0][:200]
        raise UserError(f"cannot read the studies in {mask_url(storage_url)}: {cause}") from None


def study_name(args: Settings, names: list[str], creating: bool, storage_url: str) -> str:
    """The study a command is about: STUDY, else ``<dataset>-<space>``, else the only study there."""
    name = args.study or (f"{args.dataset}-{args.space or default('space')}" if args.dataset else None)
    if name is None:
        if creating or len(names) != 1:
            raise UserError(f"set DATASET or STUDY (studies in {mask_url(storage_url)}: {', '.join(names) or 'none'})")
        name = names[0]
    if not creating and name not in names:
        raise UserError(f"no study {name!r} in {mask_url(storage_url)} (there: {', '.join(names) or 'none'})")
    return name


def _resolve(args: Settings, creating: bool, layout: RunsLayout, storage_url: str,
             storage: optuna.storages.BaseStorage, data: Dataset | None) -> Context:
    from imgsearch.trials.study import resolve_settings, resolve_space

    if data is not None:
        args = dataclasses.replace(args, dataset=data.name)
    name = study_name(args, _study_names(storage, storage_url), creating, storage_url)
    given = {key: getattr(args, key) for key in STUDY_KEYS if getattr(args, key) is not None}
    settings, exists = resolve_settings(storage, name, given)
    spec = None
    if settings["dataset"] == ARRAYS:
        _check_arrays(settings, data, exists, name)
    else:
        spec = DatasetSpec(settings["dataset"], settings["image_size"], settings["labels"], settings["folder"])
        if data is None:
            spec.check_data_dir(Path(args.data_dir))
        elif data.name != settings["dataset"]:
            raise UserError(f"study {name!r} is on {settings['dataset']}, not {data.name}")
    shape = data.image_shape if data is not None else (spec.size, spec.size, 3)
    option_names = {s.name for s in SETTINGS if s.space}
    given_options = {name: getattr(args, name) for name in option_names if getattr(args, name, None) is not None}
    space = resolve_space(settings, given_options, exists, name)  # imports the space: Keras from here on
    space.check_image_size(shape, settings["space"])
    tracking_uri = args.mlflow_tracking_uri or _local_tracking_uri(layout)
    return Context(layout, storage_url, storage, name, settings, exists, spec, space,
                   Path(args.data_dir), tracking_uri, data, _mlflow_ui(args, tracking_uri))


def _mlflow_ui(args: Settings, tracking_uri: str) -> str:
    """The MLflow UI's address: a tracking server's own (without its password), else the one
    ``make mlflow`` serves on (HOST and MLFLOW_PORT; 127.0.0.1 for an all-addresses HOST)."""
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
    host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "[::]") else args.host
    return f"http://{host}:{args.mlflow_port}"


def _check_arrays(settings: dict, arrays: Dataset | None, exists: bool, name: str) -> None:
    """A study on arrays goes on only with the same arrays: a new one records their fingerprint."""
    if arrays is None:
        raise UserError(f"study {name!r} was made from NumPy arrays in Python; its data is not on disk: "
                        "use imgsearch.search(x_train, y_train, ...) with the same arrays")
    if not exists:
        settings[FINGERPRINT] = arrays.fingerprint
    elif settings.get(FINGERPRINT) != arrays.fingerprint:
        raise UserError(f"study {name!r} was made from other arrays (fingerprint {settings.get(FINGERPRINT)}, "
                        f"these are {arrays.fingerprint}); give study= a new name to search on these")


def _local_tracking_uri(layout: RunsLayout) -> str:
    from imgsearch.storage.mlflow_store import local_tracking_uri

    return local_tracking_uri(layout)


def _trial_target(args: Settings) -> int | None:
    """TRIALS (None: no limit, the budget ends the search); the values were checked by the CLI."""
    from imgsearch.trials.budget import budget_seconds

    if args.trials is not None:
        return args.trials
    return None if budget_seconds(args.budget, args.timeout) is not None else default("trials")


def _queue_again_what_was_interrupted(study: optuna.Study) -> list[int]:
    """Queue again, once, each trial that was interrupted rather than judged (Ctrl-C, SIGTERM, a
    lost tracking store): a portfolio trial would otherwise never run. Returns their numbers."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs.get(RETRY_OF_ATTR) for t in trials}
    again = [t for t in trials if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get(INTERRUPTED_ATTR)
             and t.number not in queued]
    for trial in again:  # at the fidelity it had (search/trials/fidelity.py)
        kept = {k: trial.user_attrs[k] for k in (FRACTION_ATTR, PROMOTED_FROM_ATTR) if k in trial.user_attrs}
        study.enqueue_trial(trial.params, user_attrs={**kept, RETRY_OF_ATTR: trial.number}, skip_if_exists=False)
    return [t.number for t in again]


@dataclass
class Prepared:
    """A search ready to run, as its settings describe it: the command's context, the data, the
    study (with its MLflow tracker) and the budget, whose clock started once the data was loaded.
    ``search()`` is the trial engine (trials/engine.py) wired to them. The search and worker
    commands, the Python API, the tests and the benchmarks all build a search with ``prepare``."""

    ctx: Context
    data: Dataset
    study: optuna.Study
    tracker: object  # trials/tracking.py's Tracker
    budget: object  # trials/budget.py's Budget
    settings: Settings
    queued_again: list[int]  # trials an earlier run left interrupted, queued again

    @property
    def trials(self) -> int | None:
        """TRIALS: the finished trials the study should reach (None: until the budget ends)."""
        return _trial_target(self.settings)

    def search(self):
        """This process's ``Search``: its trials, the study's callbacks, its stop rules."""
        from imgsearch.trials.engine import Search

        ctx, args = self.ctx, self.settings
        return Search(self.study, ctx.storage, ctx.space, self.data, self.tracker, ctx.checkpoint(),
                      budget=self.budget, fixed=ctx.params, seed=ctx.settings["seed"], target=self.trials,
                      max_epoch_seconds=args.max_epoch_seconds, trials_per_process=args.trials_per_process,
                      exploring=self.exploring)

    @property
    def exploring(self) -> float:
        return _exploring(self.ctx.settings, self.data)


def _exploring(settings: dict, data: Dataset) -> float:
    """The share of the training images a sampled trial explores on (search/trials/fidelity.py); a
    study made before EXPLORE_IMAGES existed trains every trial on all of them."""
    from imgsearch.trials.fidelity import exploring_fraction

    return exploring_fraction(len(data.y_train), data.image_shape, settings.get("explore_images") or 0)


def prepare(args: Settings, *, creating: bool, data: Dataset | None = None,
            first_trials: list[dict] | None = None) -> Prepared:
    """Resolve the settings ``args`` against the study and build its search (``Prepared``).

    ``creating`` (the search command): the study is created when new, its first trials
    queued (``first_trials``, params by name; by default the space's known-good ones), trials
    an earlier run left interrupted queued again, and the budget recorded; otherwise (a
    worker) the study must exist. ``data``: the data, already in memory (see ``_context``);
    otherwise it is loaded from DATA_DIR.
    """
    from imgsearch.spaces.scale import DataScale
    from imgsearch.trials.budget import Budget, budget_seconds

    ctx = _context(args, creating=creating, data=data)
    for note in ctx.space.check_ready():  # a worker's machine may lack what the study's machine had
        if creating or not os.environ.get(LOCAL_WORKER):  # a local worker's search has said it
            print(f"note: {note}", flush=True)
    data = ctx.load_data()
    seconds, again = budget_seconds(args.budget, args.timeout), []
    total = float(os.environ.get(BUDGET_TOTAL) or seconds) if seconds else None
    with ctx.layout.setting_up():
        study = ctx.open_study()
        tracker = ctx.tracker(study)  # creates the MLflow store and the study's parent run before any worker
        if creating:
            if not study.get_trials(deepcopy=False):  # new, or its first start stopped before this point
                scale = DataScale(len(data.y_train), data.num_classes, data.image_shape, total,
                                  _exploring(ctx.settings, data))
                first = ctx.space.initial_params(data.image_shape, scale) if first_trials is None else first_trials
                for params in first:
                    params = dict(params)
                    study.enqueue_trial(params, user_attrs={FRACTION_ATTR: params.pop(FRACTION_ATTR, 1.0)})
            again = _queue_again_what_was_interrupted(study)
            study.set_user_attr(BUDGET_ATTR, total)
    budget = Budget(seconds, ctx.settings["epochs"], total=total,  # from here: data preparation is not counted
                    exploring=_exploring(ctx.settings, data))
    return Prepared(ctx, data, study, tracker, budget, args, again)


@dataclass
class Outcome:
    """What a search leaves: the study, the exported model's path and its evaluation on the test split."""

    study: optuna.Study
    model_path: Path
    evaluation: dict


def search(args: Settings, arrays: Dataset | None = None) -> Outcome:
    """Add trials until the study has TRIALS finished ones or BUDGET runs out, then export and evaluate.

    With WORKERS=N the trials run in N local ``worker`` processes (one GPU each when GPUs
    are visible) while this one waits; it creates the study first, so they all join it.
    ``arrays``: search on these (the Python API) rather than on DATASET.
    """
    from imgsearch.trials.trial_target import finished_count, reached

    if args.workers > 1:
        check_worker_count(args.workers)
        if arrays is not None:
            raise UserError("workers=N > 1 needs data on disk (the workers are processes of their own): "
                            "search on arrays with one worker, or save them as a folder dataset")
    prepared = prepare(args, creating=True, data=arrays)
    ctx, study, tracker, data, budget, trials = (prepared.ctx, prepared.study, prepared.tracker, prepared.data,
                                                 prepared.budget, prepared.trials)
    if prepared.queued_again:
        print(f"queued again: trials {', '.join(map(str, prepared.queued_again))}, which were interrupted", flush=True)
    _announce(prepared)
    if args.workers > 1:
        failed = run_local_workers(args.workers, ctx.study_name, ctx.storage_url, worker_environment(args))
        if failed and not reached(study, trials):
            target = f"/{trials}" if trials is not None else ""
            raise UserError(f"{'; '.join(failed)}; {finished_count(study)}{target} trials finished")
        for line in failed:
            print(f"note: {line}; the other workers finished the study", flush=True)
    else:
        run_trials(prepared)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        within = f"within the {budget.seconds:g} s budget" if budget.seconds is not None else f"of {trials} trials"
        raise UserError(f"no trial completed {within} (the trial lines above say why); "
                        + ("give a larger BUDGET, and " if budget.seconds is not None else "")
                        + "run the same command to resume the study")
    after = time.monotonic()
    best = _best_trial(study)
    current = _current_export(ctx, best)
    model_path, result = current or _export_and_evaluate(ctx, study, tracker, data)
    print(f"\nthe {min(SHOWN, len(study.trials))} best trials:\n{_leaderboard_text(study)}")
    print(f"\nbest trial {best.number}: val_accuracy {best.value:.4f}")
    top5 = f", top5 {result['top5']:.4f}" if "top5" in result else ""
    unchanged = " (unchanged: the best trial is the one exported before; not exported again)" if current else ""
    print(f"exported model: {model_path}{unchanged}")
    print(f"evaluation:     {model_path.parent / 'evaluation.json'} (test top1 {result['top1']:.4f}{top5}, "
          f"n_test {result['n_test']})")
    if budget.seconds is not None:
        print(f"time: {budget.total - max(0.0, budget.left()):.0f} s of the {budget.total:g} s budget searching, "
              f"then {time.monotonic() - after:.0f} s exporting and evaluating")
    return Outcome(study, model_path, result)


def _current_export(ctx: Context, best) -> tuple[Path, dict] | None:
    """(model path, evaluation) when the study's export is of ``best`` and was evaluated: a search
    that changed nothing exports and registers nothing again."""
    from imgsearch.results.evaluate import EVALUATION_FILE

    folder = ctx.layout.exports(ctx.study_name)
    paths = folder / MODEL_FILE, folder / INFO_FILE, folder / EVALUATION_FILE
    if not all(path.is_file() for path in paths):
        return None
    info = json.loads(paths[1].read_text())
    if info.get("trial") != best.number or info.get("val_accuracy") != best.value:
        return None
    return paths[0], json.loads(paths[2].read_text())


def _leaderboard_text(study: optuna.Study) -> str:
    from imgsearch.results.leaderboard import leaderboard

    table = leaderboard(study, top=SHOWN)
    if table["family"].isna().all():  # not SPACE=auto
        table = table.drop(columns="family")
    table["why"] = table["why"].str.slice(0, 60)
    table["val"] = table["val"].round(4)
    return table.to_string(index=False)


def worker(args: Settings) -> int:
    """Join an existing study and add trials until it has TRIALS finished ones or BUDGET runs out."""
    prepared = prepare(args, creating=False)
    if not os.environ.get(LOCAL_WORKER):  # a local worker's search has said it
        _announce(prepared)
    run_trials(prepared)
    return 0


def _announce(prepared: Prepared) -> None:
    from imgsearch.trials.trial_target import finished_count

    data, target = prepared.data, f"/{prepared.trials}" if prepared.trials is not None else ""
    print(f"study {prepared.ctx.study_name} in {mask_url(prepared.ctx.storage_url)}: "
          f"{finished_count(prepared.study)}{target} trials finished | "
          f"{data.name} {data.image_shape}, {data.num_classes} classes, "
          f"train {len(data.y_train)} / val {len(data.y_val)} / test {len(data.y_test)}", flush=True)


def run_trials(prepared: Prepared) -> None:
    """This process's share of the search (``Search.run``) and why it stopped. Raises
    RestartProcess after TRIALS_PER_PROCESS trials, UserError when trials keep failing."""
    from imgsearch.trials.describe import plural
    from imgsearch.trials.engine import Stop
    from imgsearch.trials.process_restart import RestartProcess
    from imgsearch.trials.progress import worker_tag

    engine = prepared.search()
    stop = engine.run()
    print(f"{worker_tag()}search stopped: {engine.why(stop)}", flush=True)
    if stop is Stop.FAILING:
        raise UserError(f"search stopped: {engine.failing_because}")
    if stop is Stop.RESTART:
        print(f"{worker_tag()}{plural(engine.trial_count.count, 'trial')} in this process: continuing in a fresh one "
              "(returns TensorFlow's memory)", flush=True)
        raise RestartProcess(prepared.budget.left(), prepared.budget.total)


def _best_trial(study: optuna.Study):
    from imgsearch.ranking import best_trial

    return best_trial(study)


def _export(ctx: Context, study, tracker, data) -> Path:
    from imgsearch.results.export import export_best

    return export_best(study, ctx.checkpoint(), ctx.layout.exports(ctx.study_name), tracker, data, ctx.settings)


def _evaluate(ctx: Context, tracker, data: Dataset) -> dict:
    from imgsearch.results import registry
    from imgsearch.results.evaluate import evaluate_model

    model_path = ctx.layout.exports(ctx.study_name) / MODEL_FILE
    if not model_path.is_file():
        raise UserError(f"no exported model at {model_path}; run `make export` first")
    result, files = evaluate_model(model_path, data, model_path.parent)
    metrics = {f"test_{k}": v for k, v in result.items() if k in ("top1", "top5", "loss", "n_test")}
    tracker.log_to_parent(metrics, files)
    registry.tag_latest_version(tracker, ctx.study_name,
                                {k: f"{v:.4f}" for k, v in metrics.items() if k in ("test_top1", "test_top5")})
    return result


def _export_and_evaluate(ctx: Context, study, tracker, data) -> tuple[Path, dict]:
    """Export then evaluate, a signal taking effect after both (Python's KeyboardInterrupt raised
    inside TensorFlow's predict breaks its state: SystemError); a second one stops at once."""
    from imgsearch.trials import signals

    with signals.deferred():
        path = _export(ctx, study, tracker, data)
        result = _evaluate(ctx, tracker, data)
    signals.raise_pending()
    return path, result


def export(args: Settings) -> int:
    """Write RUNS_DIR/exports/<study>/model.keras from the best trial and register it in MLflow."""
    from imgsearch.trials import signals

    ctx = _context(args, creating=False)
    study = ctx.open_study()
    tracker = ctx.tracker(study)
    data = ctx.load_data()
    with signals.deferred():
        path = _export(ctx, study, tracker, data)
    signals.raise_pending()
    best = _best_trial(study)
    print(f"exported trial {best.number} (val_accuracy {best.value:.4f}) to {path}")
    return 0


def evaluate(args: Settings) -> int:
    """Score the exported model on the test split: evaluation.json + confusion_matrix.png."""
    from imgsearch.trials import signals

    ctx = _context(args, creating=False)
    study = ctx.open_study()
    with signals.deferred():
        result = _evaluate(ctx, ctx.tracker(study), ctx.load_data())
    signals.raise_pending()
    summary = ", ".join(f"{k} {result[k]:.4f}" for k in ("top1", "top5", "loss") if k in result)
    print(f"{ctx.layout.exports(ctx.study_name) / 'evaluation.json'}: {summary}, n_test {result['n_test']}")
    return 0


def exported_model(args: Settings) -> Path:
    """MODEL, else the export of the study (STUDY, ``<dataset>-<space>``, or the only one)."""
    if args.model:
        return Path(args.model)
    layout = RunsLayout(Path(args.runs_dir))
    if not args.storage:
        layout.check_study_db()
    storage_url = args.storage or default_storage_url(layout.study_db)
    storage = open_storage(storage_url, retry_seconds=args.db_retry)
    name = study_name(args, _study_names(storage, storage_url), False, storage_url)
    path = layout.exports(name) / MODEL_FILE
    if not path.is_file():
        raise UserError(f"study {name!r} has no exported model at {path}; run `make export` first, or set MODEL")
    return path


def predict(args: Settings):
    """Print each image's TOP_K classes and write them all to PREDICTIONS (a CSV): a pandas DataFrame."""
    from imgsearch.results.predict import Classifier, predict_files, write_csv

    if not args.images:
        raise UserError("set IMAGES to an image file, a folder of images or a zip of them")
    model_path = exported_model(args)
    table = predict_files(Classifier(model_path), args.images, args.top_k)
    out = write_csv(table, Path(args.predictions) if args.predictions else Path(args.runs_dir) / "predictions.csv")
    shown = min(len(table), PREDICTIONS_SHOWN)
    for row in table.head(shown).itertuples(index=False):
        ranked = ", ".join(f"{row[i]} {row[i + 1]:.3f}" for i in range(1, len(row), 2))
        print(f"{row[0]}: {ranked}")
    more = f" ({len(table) - shown} more there)" if len(table) > shown else ""
    print(f"predictions of {model_path} for {len(table)} images: {out}{more}")
    return table


def report(args: Settings) -> int:
    """Write one HTML file on every study in the study database and its MLflow runs, and in the
    runs folders of RUNS_DIRS beside it."""
    layout = RunsLayout(Path(args.runs_dir))
    others = [RunsLayout(Path(folder.strip())) for folder in (args.runs_dirs or "").split(",") if folder.strip()]
    if not args.storage:
        layout.check_study_db()
    for other in others:
        other.check_study_db()
    out = Path(args.report) if args.report else layout.root / "report.html"
    if out.is_dir():
        raise UserError(f"REPORT {out} is a folder; give the HTML file to write, e.g. REPORT={out / 'report.html'}")
    from imgsearch.results.report import write_report

    with contextlib.ExitStack() as stack:  # a read-only RUNS_DIR (copied, say) is read from a copy
        readable = stack.enter_context(layout.readable_copy())
        storage_url = args.storage or default_storage_url(readable.study_db)
        tracking_uri = args.mlflow_tracking_uri or (_local_tracking_uri(readable) if readable.mlflow_db.is_file()
                                                    else None)
        sources = [(open_storage(storage_url), tracking_uri, str(layout.root) if others else mask_url(storage_url))]
        for other in others:
            copy = stack.enter_context(other.readable_copy())
            sources.append((open_storage(default_storage_url(copy.study_db)),
                            _local_tracking_uri(copy) if copy.mlflow_db.is_file() else None, str(other.root)))
        count = write_report(sources, out)
    print(f"report of {count} {'study' if count == 1 else 'studies'}: {out}")
    return 0


def clean(args: Settings) -> int:
    """Delete RUNS_DIR: only a runs folder this project made, holding nothing else."""
    layout = RunsLayout(Path(args.runs_dir))
    if not layout.root.exists():
        print(f"nothing to delete: {layout.root} does not exist")
        return 0
    why = layout.not_ours()
    if why:
        raise UserError(f"{why}: not deleting it")
    shutil.rmtree(layout.root)
    print(f"deleted {layout.root}")
    return 0
