"""Export the best trial's model and register it in the MLflow model registry."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from importlib.metadata import version

import keras
import mlflow
import numpy as np
import optuna

from imgsearch.datasets import Dataset
from imgsearch.results import registry
from imgsearch.records import ENSEMBLE_OF_ATTR, ENSEMBLE_WEIGHTS_ATTR, INFO_FILE, MODEL_FILE, family_of
from imgsearch.trials.tracking import Tracker, best_step
from imgsearch.spaces import load_model
from imgsearch.spaces.portable import portable_model
from imgsearch.storage.files import locked, remove_leftovers, scratch_folder, write_atomic
from imgsearch.trials.checkpoints import BestCheckpoint



def export_best(study: optuna.Study, checkpoint: BestCheckpoint, out_dir: Path, tracker: Tracker,
                data: Dataset, settings: dict) -> Path:
    """Copy the best trial's model to ``out_dir/model.keras`` and register it.

    Also writes ``model.json`` (trial, value, params, class names, input shape, study
    settings; for an ensemble, its members), so the file can be used without the study. The registered model is named
    after the study; each export is a new version, logged into the trial's own run (at its
    best epoch's step, so the version shows that epoch's metrics and the trial's params)
    and described with the trial's number and value; that run also gets the trial's
    ``learning_curves.png``. The ``best`` tag is checked to be on that run alone.

    One export of a study at a time (a lock in ``out_dir``). Nothing is left half-done by
    a failure or a kill: files are written whole, the run's status is never touched,
    MLflow's scratch files go to a folder in ``out_dir`` that is removed afterwards (or by
    the next export), and a logged model that did not finish is marked FAILED, its files
    deleted (here, or by the next process's ``Tracker.repair``).
    """
    best, source = checkpoint.best(study)
    with locked(out_dir / ".export.lock"):
        remove_leftovers(out_dir)
        tracker.repair()
        model = portable_model(load_model(source, compile=False))
        target = write_atomic(out_dir / MODEL_FILE, lambda tmp: model.save(tmp))
        info = {
            "study": study.study_name, "trial": best.number, "val_accuracy": best.value, "params": best.params,
            "settings": settings, "class_names": data.class_names, "input_shape": list(data.image_shape),
            "input_dtype": "uint8", "load": f"keras.saving.load_model('{MODEL_FILE}'): Keras's own layers only",
            "input": "uint8 images of input_shape, 0-255, resized as the dataset was: a centre square, then a box "
                     "filter when shrinking or bicubic when enlarging (imgsearch.predict does it)",
            "output": "one probability per class, in the order of class_names",
        }
        if ENSEMBLE_OF_ATTR in best.user_attrs:  # the end-of-budget step's ensemble: what it is made of
            members = {t.number: t for t in study.get_trials(deepcopy=False)}
            info["model"] = "ensemble: the weighted mean of its members' class probabilities"
            info["ensemble_of"] = [{"trial": n, "weight": w, "family": family_of(members[n]),
                                    "val_accuracy": members[n].value, "params": members[n].params}
                                   for n, w in zip(best.user_attrs[ENSEMBLE_OF_ATTR],
                                                   best.user_attrs[ENSEMBLE_WEIGHTS_ATTR])]
        write_atomic(out_dir / INFO_FILE, lambda tmp: tmp.write_text(json.dumps(info, indent=2)))
        sample = np.asarray(data.x_test[:2])
        signature = mlflow.models.infer_signature(sample, model.predict(sample, verbose=0))
        # Naming the requirements skips MLflow's import-tracing inference (~10 s a call).
        backend = keras.backend.backend()  # the distribution is named like the backend
        requirements = [f"keras=={version('keras')}", f"{backend}=={version(backend)}"]
        tracker.log_to_parent({}, [out_dir / INFO_FILE], artifact_path="export")
        with scratch_folder(out_dir):
            try:
                logged = registry.log_model(tracker, best, model, name="model",
                                            registered_model_name=study.study_name,
                                            signature=signature, pip_requirements=requirements,
                                            step=best_step(list(best.intermediate_values.items()), best.value))
            except BaseException:
                if not tracker.lost:
                    with contextlib.suppress(Exception):  # else the next process's Tracker.repair does it
                        tracker.fail_pending_models(lambda pid: pid == os.getpid())
                raise
        registry.describe_version(tracker, study.study_name, str(logged.registered_model_version), best)
        registry.log_learning_curves(tracker, best)
        tracker.mark_best(best, check_all=True)
    return target
