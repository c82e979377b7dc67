"""Guards for version combinations that are known to break (see pyproject.toml)."""

from __future__ import annotations

import numpy as np
from packaging.version import Version


def test_keras_is_below_3_13():
    import keras

    # autokeras 3.0.0 cannot build an ImageClassifier with keras >= 3.13.
    assert Version(keras.__version__) < Version("3.13"), keras.__version__


def test_autokeras_image_classifier_trains_one_trial(tmp_path):
    """Builds and fits a real AutoKeras ImageClassifier: fails with keras >= 3.13, or when
    tensorboard (imported by every KerasTuner trial under TensorFlow) is missing."""
    import autokeras as ak

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (24, 16, 16, 3), dtype=np.uint8)
    y = np.arange(24) % 2
    clf = ak.ImageClassifier(max_trials=1, overwrite=True, directory=str(tmp_path), seed=1)
    clf.fit(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert clf.predict(x[:4], verbose=0).shape[0] == 4
