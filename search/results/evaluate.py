"""Evaluate an exported model on the held-out test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from imgsearch import figures
from imgsearch.datasets import Dataset
from imgsearch.spaces import load_model
from imgsearch.storage.files import write_atomic

EVALUATION_FILE = "evaluation.json"
CONFUSION_FILE = "confusion_matrix.png"


def score(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """top1, top5 (more than 5 classes), mean cross-entropy loss, n_test, per-class accuracy, confusion matrix."""
    labels = np.asarray(labels, dtype=np.int64)
    predicted = probabilities.argmax(axis=1)
    n_classes = len(class_names)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (labels, predicted), 1)
    true_p = np.clip(probabilities[np.arange(len(labels)), labels], 1e-7, 1.0)
    result = {
        "n_test": int(len(labels)),
        "top1": float((predicted == labels).mean()),
        "loss": float(-np.log(true_p).mean()),
    }
    if n_classes > 5:
        top5 = np.argsort(probabilities, axis=1)[:, -5:]
        result["top5"] = float((top5 == labels[:, None]).any(axis=1).mean())
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    result["per_class_accuracy"] = {name: float(acc) for name, acc in zip(class_names, per_class)}
    result["confusion_matrix"] = confusion.tolist()
    return result


def evaluate_model(model_path: Path, data: Dataset, out_dir: Path) -> tuple[dict, list[Path]]:
    """Score the model on ``data``'s test split; write evaluation.json and the confusion matrix PNG."""
    model = load_model(model_path, compile=False)
    probabilities = np.asarray(model.predict(data.x_test, batch_size=256, verbose=0))
    result = score(probabilities, data.y_test, data.class_names)
    json_path, png_path = out_dir / EVALUATION_FILE, out_dir / CONFUSION_FILE
    write_atomic(json_path, lambda tmp: tmp.write_text(json.dumps(result, indent=2)))
    figure = figures.confusion_matrix(np.array(result["confusion_matrix"]), data.class_names)
    write_atomic(png_path, lambda tmp: figure.savefig(tmp, format="png", dpi=80))
    return result, [json_path, png_path]
