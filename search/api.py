"""The Python API: ``imgsearch.search``, ``imgsearch.load_result``, ``imgsearch.predict``.

It and the command line (``command_line/main.py``) are two thin front ends over the same
commands (``command_line/commands.py``) and settings.

The same settings as the command line, as keyword arguments (``search/settings.py``: the same
names, in lower case, the same checks and errors: a ``UserError`` with the line the command line
prints). Environment variables are not read: a call says all it means. What the search prints
goes to stdout as on the command line. Signal handlers are installed for the search and the ones
that were there before are put back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from imgsearch.records import INFO_FILE
from imgsearch.results.leaderboard import leaderboard
from imgsearch.settings import resolve
from imgsearch.storage.errors import UserError
from imgsearch.trials import signals


@dataclass
class SearchResult:
    """A finished search: ``study`` (Optuna), ``model_path`` (the exported ``model.keras``, with its
    ``model.json``) and ``evaluation`` (test top1, top5, loss, n_test, per class, confusion)."""

    study: object  # optuna.Study
    model_path: Path
    evaluation: dict

    @property
    def best_trial(self):
        """The study's best trial (an Optuna FrozenTrial): the exported one."""
        from imgsearch.ranking import best_trial

        return best_trial(self.study)

    def leaderboard(self, top: int | None = None):
        """A pandas DataFrame, best validation accuracy first, one row a trial: trial, family, key
        params, epochs trained, seconds, parameters, val (accuracy), state and why (pruned,
        failed, cut or stopped)."""
        return leaderboard(self.study, top)

    def predict(self, images, top_k: int = 5):
        """``predict`` with this search's model."""
        return predict(images, model=self.model_path, top_k=top_k)

    def load_model(self):
        """The exported model, a plain Keras model (uint8 images in, class probabilities out)."""
        import keras

        return keras.saving.load_model(self.model_path)


def search(x_train=None, y_train=None, *, x_val=None, y_val=None, x_test=None, y_test=None, class_names=None,
           **settings) -> SearchResult:
    """Run (or resume) a search, then export and evaluate its best model.

    Data: a named ``dataset=`` ("digits", "cifar10", "tinyimagenet", "folder" with ``folder=``)
    or NumPy arrays: ``x_train`` uint8 images (N, H, W) or (N, H, W, C), ``y_train`` their labels
    (class indices, or strings), optionally ``x_val, y_val`` (else a tenth of the training
    data is carved off) and ``x_test, y_test`` (else a fifth is), and ``class_names``. A study
    on arrays records their fingerprint: resuming it with other arrays is refused.
    ``settings``: any setting of the command line by its lower-case name (``budget=120``,
    ``space="cnn"``, ``runs_dir="runs"``, ...). Raises UserError for bad input.
    """
    from imgsearch.command_line import commands

    if settings.get("dataset") is not None and x_train is not None:
        raise UserError("give dataset= or arrays (x_train, y_train), not both")
    if (x_train is None) != (y_train is None):
        raise UserError("give both x_train and y_train")
    if settings.get("trials_per_process"):
        raise UserError("trials_per_process: a search from Python stays in the caller's process (a notebook's "
                        "cannot be replaced); leave it out")
    args = resolve({**settings, "trials_per_process": 0})
    data = None
    if x_train is not None:
        from imgsearch.datasets.arrays import from_arrays

        data = from_arrays(x_train, y_train, x_val, y_val, x_test, y_test, class_names, image_size=args.image_size)
    with signals.installed():
        outcome = commands.search(args, arrays=data)
    return SearchResult(outcome.study, outcome.model_path, outcome.evaluation)


def load_result(**settings) -> SearchResult:
    """The result of a search already run (by the command line or the API): ``study=`` (else
    ``<dataset>-<space>``, else the only study there) in ``runs_dir=`` / ``storage=``. It needs
    the study's export (``make export``)."""
    import optuna

    from imgsearch.command_line.commands import exported_model
    from imgsearch.results.evaluate import EVALUATION_FILE
    from imgsearch.storage.layout import RunsLayout
    from imgsearch.storage.optuna_storage import open_storage
    from imgsearch.storage.urls import default_storage_url

    args = resolve(settings)
    model_path = exported_model(args)  # checks the study database and the study
    info = json.loads((model_path.parent / INFO_FILE).read_text())
    storage_url = args.storage or default_storage_url(RunsLayout(Path(args.runs_dir)).study_db)
    study = optuna.load_study(study_name=info["study"], storage=open_storage(storage_url))
    evaluation_path = model_path.parent / EVALUATION_FILE
    evaluation = json.loads(evaluation_path.read_text()) if evaluation_path.is_file() else {}
    return SearchResult(study, model_path, evaluation)


def predict(images, model: str | Path | None = None, top_k: int = 5, **settings):
    """Each image's ``top_k`` classes and probabilities, a pandas DataFrame (columns ``image``,
    ``class_1``, ``probability_1``, ...). ``images``: uint8 arrays (N, H, W[, C]) of any size, or
    the path of an image, a folder of images or a zip of them. ``model``: an exported
    ``model.keras`` (else the study's export, found as ``load_result`` finds it). Images are prepared
    exactly as the training data was."""
    from imgsearch.command_line.commands import exported_model
    from imgsearch.results.predict import Classifier, predict_files

    args = resolve({**settings, "model": None if model is None else str(model), "top_k": top_k})
    classifier = Classifier(exported_model(args))
    if isinstance(images, (str, Path)):
        return predict_files(classifier, images, args.top_k)
    probabilities = classifier.probabilities(images)
    return classifier.top_k(probabilities, list(range(len(probabilities))), args.top_k)
