"""The budget race (not a test): this project's search against what a user would run instead.

On one Tiny-ImageNet-layout dataset (a DATA_DIR holding tiny-imagenet-200.zip or its
folder, or the zip or folder itself), at one image size, every system gets the same
train / validation split as uint8 arrays and the same BUDGET seconds, one after the other
in a fresh process each, on this machine:

- ``ours``: ``python -m imgsearch`` with its defaults (SPACE=auto) and BUDGET, on the weights of
  --weights-dir when given;
- ``cnn``: the same with SPACE=cnn (networks from scratch only);
- ``kerastuner``: KerasTuner's Hyperband on a plain CNN space (max_epochs 10);
- ``autokeras``: AutoKeras 3.0's ImageClassifier with its default tuner and epochs;
- ``random``: Optuna random sampling of that plain CNN space, 10 epochs a trial, no pruning;
- ``fixed``: one plain 3-block CNN (batch norm, Adam), 10 epochs;
- ``resnet9``: one ResNet-9 (``resnet9``) under a one-cycle schedule that spans the budget (its
  epochs from its first batches' pace);
- with --weights-dir, also ``finetune`` (``python -m imgsearch`` with SPACE=finetune on those weights)
  and ``ours-no-weights`` (the default search without them, as on a machine with none).

Every finished epoch's validation accuracy is logged with its time since the system's start
(after imports and data loading). The table gives each system's best so far at 60, 150, 300
and 600 s (and at the budget); ``race.png`` plots best so far against time. Peers are
stopped at the budget; our search stops itself, then exports and evaluates (its extra time
is printed, not raced).

  .venv/bin/python benchmarks/race.py --data-dir DIR [--image-size 32] [--budget 600] [--weights-dir W]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEERS = ("ours", "cnn", "kerastuner", "autokeras", "random", "fixed", "resnet9")
OURS = ("ours", "cnn", "finetune", "ours-no-weights")  # python -m imgsearch: it stops itself, then exports
MARKS = (60, 150, 300, 600)
PLAIN_EPOCHS = 10  # the peers' epochs per trial, and the fixed CNN's
RESNET9_WIDTH, RESNET9_BATCH = 12, 256  # the ResNet-9 recipe's first width and batch: measured, docs/scale.md


# ---- the dataset, shared by all ---------------------------------------------------------

def data_dir_for(path: Path, work: Path) -> Path:
    """A DATA_DIR for ``path``: a folder holding tiny-imagenet-200(.zip), the zip, or the folder."""
    path = path.resolve()
    if (path / "tiny-imagenet-200.zip").exists() or (path / "tiny-imagenet-200").is_dir():
        return path
    linked = work / "data"
    linked.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".zip":
        (linked / "tiny-imagenet-200.zip").symlink_to(path)
    elif (path / "wnids.txt").is_file():
        (linked / "tiny-imagenet-200").symlink_to(path)
    else:
        sys.exit(f"error: {path} is neither a DATA_DIR with tiny-imagenet-200(.zip), the zip, nor the unpacked folder")
    return linked


def load(data_dir: Path, size: int):
    from imgsearch.datasets import DatasetSpec

    return DatasetSpec("tinyimagenet", image_size=size).load(data_dir)


# ---- what every peer logs ---------------------------------------------------------------

def epoch_logger(log: Path, start: float):
    """A Keras callback appending each epoch's val_accuracy and time since ``start`` to ``log``."""
    import keras

    class EpochLog(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get("val_accuracy")
            if value is not None:
                with log.open("a") as f:
                    f.write(json.dumps({"t": time.time() - start, "val_accuracy": float(value)}) + "\n")

    return EpochLog()


class Sampled:
    """The plain CNN space's three kinds of choice, asked of KerasTuner's ``hp`` or an Optuna trial."""

    def __init__(self, hp=None, trial=None, fixed=None):
        self.hp, self.trial, self.fixed = hp, trial, fixed

    def int(self, name, low, high):
        if self.fixed is not None:
            return self.fixed[name]
        return self.hp.Int(name, low, high) if self.hp else self.trial.suggest_int(name, low, high)

    def choice(self, name, values):
        if self.fixed is not None:
            return self.fixed[name]
        return self.hp.Choice(name, values) if self.hp else self.trial.suggest_categorical(name, values)

    def float(self, name, low, high, log=False):
        if self.fixed is not None:
            return self.fixed[name]
        if self.hp:
            return self.hp.Float(name, low, high, sampling="log" if log else "linear")
        return self.trial.suggest_float(name, low, high, log=log)


def plain_cnn(sampled: Sampled, image_shape, num_classes):
    """The plain CNN space the peers search: 1-3 conv blocks (BN, max pool), a dense layer, Adam."""
    import keras
    from keras import layers

    hp_int, hp_choice, hp_float = sampled.int, sampled.choice, sampled.float
    inputs = keras.Input(image_shape, dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    filters = hp_choice("filters", [16, 32, 64])
    kernel = hp_choice("kernel_size", [3, 5])
    for block in range(hp_int("conv_blocks", 1, 3)):
        x = layers.Conv2D(filters * 2**block, kernel, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(hp_choice("dense_units", [64, 128, 256]), activation="relu")(x)
    x = layers.Dropout(hp_float("dropout", 0.0, 0.5))(x)
    outputs = layers.Dense(num_classes, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(hp_float("learning_rate", 1e-4, 1e-2, log=True)),
                  "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def resnet9(image_shape, num_classes, width: int, steps: int, peak: float = 0.4):
    """ResNet-9 (Page's DAWNBench recipe, at ``width`` channels in its first conv: 64-128-256-512 at
    width 64): a conv, three stages (conv, max pool; a residual unit of two convs in the first and
    last), global max pool, a dense layer scaled by 1/8; SGD with Nesterov momentum under a
    one-cycle schedule (linear up to ``peak`` over the first 30% of ``steps``, linear down to 0),
    weight decay 5e-4, label smoothing 0.2, flips and 4-pixel shifts."""
    import keras
    from keras import layers

    from imgsearch.spaces.common import SparseCrossentropyWithSmoothing

    class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            step, warm = keras.ops.cast(step, "float32"), max(1.0, 0.3 * steps)
            return keras.ops.where(step < warm, peak * step / warm,
                                   peak * keras.ops.maximum(0.0, (steps - step) / (steps - warm)))

    def conv_bn(x, channels):
        x = layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9)(x)
        return layers.Activation("relu")(x)

    inputs = keras.Input(image_shape, dtype="uint8")
    x = layers.Rescaling(1 / 255)(inputs)
    x = layers.RandomFlip("horizontal")(x)
    x = layers.RandomTranslation(4 / image_shape[0], 4 / image_shape[1], fill_mode="reflect")(x)
    x = conv_bn(x, width)
    for stage, residual in ((2, True), (4, False), (8, True)):
        x = layers.MaxPooling2D()(conv_bn(x, width * stage))
        if residual:
            x = layers.Add()([x, conv_bn(conv_bn(x, width * stage), width * stage)])
    x = layers.Rescaling(0.125)(layers.Dense(num_classes)(layers.GlobalMaxPooling2D()(x)))
    model = keras.Model(inputs, layers.Activation("softmax")(x))
    model.compile(keras.optimizers.SGD(OneCycle(), momentum=0.9, nesterov=True, weight_decay=5e-4),
                  SparseCrossentropyWithSmoothing(0.2), metrics=["accuracy"])
    return model


def fixed_cnn(image_shape, num_classes):
    """One plain 3-block CNN: 32/64/128 filters, batch norm, a 128-unit dense layer, Adam 1e-3."""
    fixed = {"filters": 32, "kernel_size": 3, "conv_blocks": 3, "dense_units": 128, "dropout": 0.3,
             "learning_rate": 1e-3}
    return plain_cnn(Sampled(fixed=fixed), image_shape, num_classes)


# ---- one system, in its own process -----------------------------------------------------

def run_system(name: str, data_dir: Path, size: int, budget: float, work: Path, weights_dir: str | None) -> None:
    import numpy as np

    data = load(data_dir, size)
    x, y = np.asarray(data.x_train), np.asarray(data.y_train)
    val = (np.asarray(data.x_val), np.asarray(data.y_val))
    log = work / f"{name}.jsonl"
    start = time.time()
    (work / f"{name}.start").write_text(str(start))
    shape, classes = data.image_shape, data.num_classes
    if name in OURS:
        from imgsearch.command_line.main import main

        argv = ["search", "--dataset", "tinyimagenet", "--image-size", str(size), "--budget", str(budget),
                "--runs-dir", str(work / f"{name}-runs"), "--data-dir", str(data_dir)]
        argv += {"ours": ["--weights-dir", weights_dir] if weights_dir else [], "cnn": ["--space", "cnn"],
                 "finetune": ["--space", "finetune", "--backbones", "mobilenet", "--weights-dir", weights_dir],
                 "ours-no-weights": []}[name]
        code = main(argv)
        _log_from_mlflow(work / f"{name}-runs", start, log)
        sys.exit(code)
    if name == "fixed":
        fixed_cnn(shape, classes).fit(x, y, batch_size=64, epochs=PLAIN_EPOCHS, validation_data=val, verbose=2,
                                      callbacks=[epoch_logger(log, start)])
    elif name == "resnet9":
        # One schedule over the whole budget: its epochs are what the first batches' pace
        # affords (the probe counts against the budget, as it would for a user).
        import math

        # The median of a batch's time over 30 batches, once traced: the time of a whole fit()
        # call of 30 batches projected 250 s an epoch where the epochs then took 135-144 s (a
        # call's own overhead); the epochs on all the arrays then ran about 12% over the median
        # (125 s projected, 137-141 s taken), hence 0.9 of the time left.
        import keras
        import numpy as np

        ends = []
        clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter()))
        batches = 32
        resnet9(shape, classes, RESNET9_WIDTH, steps=1000).fit(
            x[:RESNET9_BATCH * batches], y[:RESNET9_BATCH * batches], batch_size=RESNET9_BATCH, verbose=0,
            callbacks=[clock])
        per_image = float(np.median(np.diff(ends[2:]))) / RESNET9_BATCH
        epoch_seconds = per_image * (len(y) + len(val[1]) / 3)  # validation: a forward pass only
        epochs = max(1, int((budget - (time.time() - start)) * 0.9 / epoch_seconds))
        steps = epochs * math.ceil(len(y) / RESNET9_BATCH)
        print(f"resnet9 width {RESNET9_WIDTH}: about {epoch_seconds:.0f} s an epoch; {epochs} epochs", flush=True)
        resnet9(shape, classes, RESNET9_WIDTH, steps).fit(
            x, y, batch_size=RESNET9_BATCH, epochs=epochs, validation_data=val, verbose=2,
            callbacks=[epoch_logger(log, start)])
    elif name == "kerastuner":
        import keras_tuner

        tuner = keras_tuner.Hyperband(
            lambda hp: plain_cnn(Sampled(hp=hp), shape, classes), objective="val_accuracy",
            max_epochs=PLAIN_EPOCHS, factor=3, directory=str(work / "kt"), project_name="race", overwrite=True)
        tuner.search(x, y, validation_data=val, callbacks=[epoch_logger(log, start)], verbose=2)
    elif name == "autokeras":
        import autokeras as ak

        classifier = ak.ImageClassifier(directory=str(work / "ak"), overwrite=True)
        classifier.fit(x, y, validation_data=val, callbacks=[epoch_logger(log, start)], verbose=2)
    elif name == "random":
        import optuna

        callback = epoch_logger(log, start)

        def objective(trial):
            model = plain_cnn(Sampled(trial=trial), shape, classes)
            history = model.fit(x, y, batch_size=64, epochs=PLAIN_EPOCHS, validation_data=val, verbose=2,
                                callbacks=[callback])
            return max(history.history["val_accuracy"])

        optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler()).optimize(
            objective, timeout=budget)


def _log_from_mlflow(runs: Path, start: float, log: Path) -> None:
    """Our search's epochs, from its MLflow trial runs (each epoch's val_accuracy has its time)."""
    from mlflow.tracking import MlflowClient

    from imgsearch.storage.layout import RunsLayout
    from imgsearch.storage.mlflow_store import local_tracking_uri

    client = MlflowClient(local_tracking_uri(RunsLayout(runs)))
    points = []
    for experiment in client.search_experiments():
        for run in client.search_runs([experiment.experiment_id], "tags.optuna.trial != ''"):
            for metric in client.get_metric_history(run.info.run_id, "val_accuracy"):
                points.append({"t": metric.timestamp / 1000 - start, "val_accuracy": metric.value})
    with log.open("w") as f:
        for point in sorted(points, key=lambda p: p["t"]):
            f.write(json.dumps(point) + "\n")


# ---- the race ---------------------------------------------------------------------------

def best_so_far(points: list[dict], at: float) -> float | None:
    values = [p["val_accuracy"] for p in points if p["t"] <= at]
    return max(values) if values else None


def race(args) -> None:
    work = Path(args.out or tempfile.mkdtemp(prefix="race-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_dir = data_dir_for(Path(args.data), work)
    started = time.perf_counter()
    data = load(data_dir, args.image_size)  # prepared once, before any system's clock starts
    print(f"{data.name} at {args.image_size} px: {data.num_classes} classes, train {len(data.y_train)} / "
          f"val {len(data.y_val)}, prepared in {time.perf_counter() - started:.0f} s; budget {args.budget:g} s "
          f"per system; {os.cpu_count()} cores; work folder {work}", flush=True)
    systems = [s for s in (args.systems or ",".join(PEERS)).split(",") if s]
    if args.weights_dir and not args.systems:
        systems += ["ours-no-weights", "finetune"]
    results = {}
    for name in systems:
        (work / f"{name}.jsonl").unlink(missing_ok=True)
        command = [sys.executable, __file__, "--run-system", name, "--data-dir", str(data_dir), "--image-size",
                   str(args.image_size), "--budget", str(args.budget), "--out", str(work)]
        if args.weights_dir:
            command += ["--weights-dir", str(Path(args.weights_dir).resolve())]
        ours = name in OURS
        began = time.perf_counter()
        with (work / f"{name}.log").open("w") as out:
            process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
            # A peer's clock starts after its imports and data loading (up to ~30 s here), and it
            # is stopped past the budget; ours ends itself, then exports and evaluates.
            limit = 2 * args.budget + 120 if ours else args.budget + 45
            try:
                process.wait(timeout=limit)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log = work / f"{name}.jsonl"
        points = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        results[name] = {"points": points, "wall_s": time.perf_counter() - began, "exit": process.returncode}
        marks = ", ".join(f"{m} s: {_pct(best_so_far(points, m))}" for m in (*MARKS, args.budget))
        print(f"{name:<11} {len(points)} epochs; best so far {marks}", flush=True)
    (work / "race.json").write_text(json.dumps({"budget": args.budget, "image_size": args.image_size,
                                                "results": results}, indent=1))
    _table(results, args.budget, args.image_size, work)
    _plot(results, args.budget, work / "race.png")
    print(f"\nplot: {work / 'race.png'}")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(results: dict, budget: float, size: int, work: Path) -> None:
    marks = [m for m in MARKS if m <= budget] + ([budget] if budget not in MARKS else [])
    print(f"\nbest validation accuracy so far ({size} px, budget {budget:g} s):\n")
    print("| system | " + " | ".join(f"{m:g} s" for m in marks) + " | epochs finished in the budget |")
    print("|---|" + "---|" * (len(marks) + 1))
    for name, result in results.items():
        cells = [_pct(best_so_far(result["points"], m)) for m in marks]
        in_budget = sum(point["t"] <= budget for point in result["points"])
        print(f"| {name} | " + " | ".join(cells) + f" | {in_budget} |")
    for name in (n for n in OURS if n in results):
        evaluation = next((work / f"{name}-runs" / "exports").glob("*/evaluation.json"), None) \
            if (work / f"{name}-runs" / "exports").is_dir() else None
        if evaluation:
            top1 = json.loads(evaluation.read_text())["top1"]
            print(f"\n{name}: exported and evaluated, test top1 {100 * top1:.1f}%, process wall time "
                  f"{results[name]['wall_s']:.0f} s (the budget, then export and evaluation)")


def _plot(results: dict, budget: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for name, result in results.items():
        points = sorted(result["points"], key=lambda p: p["t"])
        times, best, so_far = [], [], 0.0
        for point in points:
            if point["t"] > budget:
                break
            so_far = max(so_far, point["val_accuracy"])
            times.append(point["t"])
            best.append(so_far)
        if times:
            ax.step([*times, budget], [*best, best[-1]], where="post", label=name, linewidth=2 if name == "ours" else 1)
    ax.set_xlabel("seconds")
    ax.set_ylabel("best validation accuracy so far")
    ax.set_xlim(0, budget)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", "--data", dest="data", required=True,
                        help="DATA_DIR with tiny-imagenet-200(.zip), or the zip or folder itself")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--budget", type=float, default=600)
    parser.add_argument("--systems", help=f"comma-separated, of {', '.join(PEERS + OURS[2:])} (default: "
                        f"{', '.join(PEERS)}; with --weights-dir also ours-no-weights and finetune)")
    parser.add_argument("--weights-dir", help="Keras weight files for ours (and the finetune row)")
    parser.add_argument("--out", help="work folder (default: a new temporary one)")
    parser.add_argument("--run-system", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_system:
        run_system(args.run_system, Path(args.data), args.image_size, args.budget, Path(args.out), args.weights_dir)
    else:
        race(args)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
