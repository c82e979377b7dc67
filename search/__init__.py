"""AutoML search for image classifiers: Optuna studies in SQL, every trial an MLflow run."""

import os

# Quiet TensorFlow's C++ start-up logging unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
