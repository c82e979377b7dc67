"""Benchmark (not a test): how the cnn space's starting points were chosen.

Trains named configurations of the cnn space on the Tiny ImageNet sample (or any
Tiny-ImageNet-layout DATA_DIR) with the search's own training recipe (warmup + cosine
schedule over the planned epochs) and prints each one's wall time, parameters and
validation accuracy per epoch. docs/defaults.md quotes it.

  .venv/bin/python benchmarks/recipes.py --data-dir DIR [--image-size 32] [--names plain32,residual16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# Each: a starting point of the space (by index) and what to change in it, and the epochs.
VARIANTS = {
    "plain32-sgd": (0, {}, 15),
    "plain32-sgd-10ep": (0, {}, 10),
    "plain32-adamw-10ep": (0, {"optimizer": "adamw", "adamw_learning_rate": 2e-3, "adamw_weight_decay": 0.02}, 10),
    "plain48-sgd": (1, {}, 15),
    "residual16-sgd-10ep": (2, {}, 10),
    "residual16-sgd": (2, {}, 15),
    "residual24-sgd-10ep": (2, {"filters": 24}, 10),
    "plain32x2-adamw-10ep": (0, {"convs_per_block": 2, "optimizer": "adamw", "adamw_learning_rate": 2e-3,
                                 "adamw_weight_decay": 0.02}, 10),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="a DATA_DIR holding tiny-imagenet-200(.zip)")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--names", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    args = parser.parse_args()

    import keras
    import numpy as np
    import optuna

    from imgsearch.trials.budget import EpochPlan
    from imgsearch.datasets import DatasetSpec
    from imgsearch.trials.callbacks import WarmupCosine
    from imgsearch.trials.study import get_space

    data = DatasetSpec("tinyimagenet", args.image_size).load(Path(args.data_dir))
    x, y, val = np.asarray(data.x_train), data.y_train, (np.asarray(data.x_val), data.y_val)
    space = get_space("cnn")
    portfolio = space.initial_params(data.image_shape)
    print(f"{len(y)} train / {len(data.y_val)} val images at {args.image_size} px, keras {keras.__version__}")
    print("| configuration | epochs | parameters | seconds | best val accuracy | val accuracy per epoch |")
    print("|---|---|---|---|---|---|")
    for name in args.names.split(","):
        start, changes, epochs = VARIANTS[name]
        keras.utils.set_random_seed(0)
        candidate = space.build(optuna.trial.FixedTrial({**portfolio[start], **changes}), data.image_shape,
                                data.num_classes)
        plan = EpochPlan(epochs)
        started = time.perf_counter()
        history = candidate.model.fit(x, y, batch_size=candidate.batch_size, epochs=epochs, validation_data=val,
                                      verbose=0, callbacks=[WarmupCosine(lambda: plan.total)])
        seconds = time.perf_counter() - started
        curve = history.history["val_accuracy"]
        print(f"| {name} | {epochs} | {candidate.model.count_params():,} | {seconds:.0f} | {max(curve):.3f} | "
              f"{' '.join(f'{v:.2f}' for v in curve)} |", flush=True)
        keras.backend.clear_session()


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main()
