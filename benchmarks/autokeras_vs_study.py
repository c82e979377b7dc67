"""Benchmark (not a test): AutoKeras with its own default tuner vs AutoKeras driven by our study.

Both get the same budget: the same data, image size, number of trials and epochs per trial,
and the same wall-clock cap. AutoKeras runs ``ak.ImageClassifier(max_trials=TRIALS)`` with its
default (greedy) tuner, then exports and scores its best model; ours runs ``make search
SPACE=autokeras`` with the same numbers (defaults otherwise). Each side runs in its own process,
one after the other, and is stopped at the cap; a side stopped there is scored on what it had
finished: AutoKeras's trial files, our study.

Run (the figures in the README):
  .venv/bin/python benchmarks/autokeras_vs_study.py --data-dir DIR_WITH_tiny-imagenet-200.zip
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

REPO = Path(__file__).resolve().parents[1]

AUTOKERAS_ALONE = """
import json, sys, numpy as np, autokeras as ak
from imgsearch.datasets import DatasetSpec
data_dir, project, image_size, trials, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
data = DatasetSpec("tinyimagenet", image_size=image_size).load(data_dir)
classifier = ak.ImageClassifier(max_trials=trials, directory=project, overwrite=True, seed=0)
classifier.fit(np.asarray(data.x_train), data.y_train, epochs=epochs, validation_data=(np.asarray(data.x_val), data.y_val))
model = classifier.export_model()
top1 = float((model.predict(np.asarray(data.x_test), verbose=0).argmax(axis=1) == data.y_test).mean())
print("RESULT " + json.dumps({"test_top1": top1}))
"""


def run(command: list[str], env: dict, cap: float, log: Path) -> tuple[float, bool, str]:
    """Run ``command`` for at most ``cap`` seconds; (seconds, stopped at the cap, stdout)."""
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=REPO, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT)
        try:
            process.wait(timeout=cap)
            stopped = False
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            stopped = True
    return time.perf_counter() - started, stopped, log.read_text()


def autokeras_trials(project: Path) -> list[dict]:
    """AutoKeras's finished trials from its own trial files: status and best val_accuracy."""
    trials = []
    for path in sorted(project.glob("image_classifier/trial_*/trial.json")):
        trial = json.loads(path.read_text())
        observations = trial["metrics"]["metrics"].get("val_accuracy", {}).get("observations", [])
        values = [o["value"][0] for o in observations]
        trials.append({"status": trial["status"], "val_accuracy": max(values) if values else None})
    return trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="folder holding tiny-imagenet-200.zip (or the sample)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--cap", type=float, default=1200, help="wall-clock seconds each side may run")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ak-bench-"))
    print(f"Tiny ImageNet at {args.data_dir}, {args.image_size} px, {args.trials} trials x {args.epochs} epochs, "
          f"cap {args.cap:.0f} s each, {os.cpu_count()} cores; logs in {work}", flush=True)

    project = work / "autokeras"
    seconds, stopped, out = run(
        [sys.executable, "-c", AUTOKERAS_ALONE, args.data_dir, str(project), str(args.image_size),
         str(args.trials), str(args.epochs)], {}, args.cap, work / "autokeras.log")
    trials = autokeras_trials(project)
    done = [t for t in trials if t["val_accuracy"] is not None and t["status"] == "COMPLETED"]
    result = next((json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")), {})
    rows = [("AutoKeras, default greedy tuner", seconds, stopped, f"{len(done)} of {len(trials)} started",
             max((t["val_accuracy"] for t in done), default=None), result.get("test_top1"))]

    runs_dir = work / "ours"
    env = {"DATASET": "tinyimagenet", "SPACE": "autokeras", "IMAGE_SIZE": str(args.image_size),
           "TRIALS": str(args.trials), "EPOCHS": str(args.epochs), "DATA_DIR": args.data_dir,
           "RUNS_DIR": str(runs_dir), "SEED": "0"}
    seconds, stopped, out = run([sys.executable, "-m", "imgsearch"], env, args.cap, work / "ours.log")
    study = optuna.load_study(study_name="tinyimagenet-autokeras", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    states = [t.state.name for t in study.trials if t.state.is_finished()]
    complete = [t.value for t in study.trials if t.state.name == "COMPLETE"]
    evaluation = runs_dir / "exports" / "tinyimagenet-autokeras" / "evaluation.json"
    top1 = json.loads(evaluation.read_text())["top1"] if evaluation.is_file() else None
    summary = ", ".join(f"{states.count(s)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL") if s in states)
    rows.append(("AutoKeras driven by our study", seconds, stopped, summary, max(complete, default=None), top1))

    print("\n| search | wall time | stopped at cap | trials | best val_accuracy | test top1 |")
    print("|---|---|---|---|---|---|")
    for name, seconds, stopped, trials_text, best, top1 in rows:
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        print(f"| {name} | {seconds / 60:.1f} min | {'yes' if stopped else 'no'} | {trials_text} | {fmt(best)} | {fmt(top1)} |")


if __name__ == "__main__":
    main()
