"""imgsearch: AutoML search for image classifiers. Optuna studies in SQL, every trial an MLflow run.

From Python (README, "From Python")::

    import imgsearch
    result = imgsearch.search(x_train, y_train, budget=60)   # or dataset="cifar10"
    result.leaderboard()                                     # a pandas DataFrame
    result.predict(x_new)                                    # top-k classes per image

``search``, ``load_result``, ``predict``, ``leaderboard``, ``SearchResult`` and ``UserError`` are
this package's API (``search/api.py``). Importing it is quick: TensorFlow is imported when a
search, an export or a prediction needs it.
"""

import os

# Quiet TensorFlow's C++ start-up logging unless the user asked for it, and MLflow's log lines:
# our progress lines say what happened, and an error MLflow logs with its traceback (hundreds of
# lines on a full disk) is also raised, and said in one line. MLflow reads this when first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "CRITICAL")
# MLflow prints a link to each run it ends on a tracking server, with the URL's password in it.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

# A tracking server that goes away is said within a bounded time (then handled like a lost study
# database: search/trials/tracking.py): MLflow's client would retry each call 7 times with
# waits doubling from 2 s, and wait 120 s for each answer (minutes of silence in an epoch).
# Here: 4 retries waiting 1, 2, 4, 8 s (about 15 s when the server refuses connections), 10 s for
# an answer (at most about 70 s when it hangs). A variable set by the user wins.
for _name, _value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "4"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                      ("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")):
    os.environ.setdefault(_name, _value)


_API = ("search", "load_result", "predict", "leaderboard", "SearchResult")


def __getattr__(name: str):
    """The API's names, imported on first use (the package itself stays light)."""
    if name in _API:
        from imgsearch import api

        return getattr(api, name)
    if name == "UserError":
        from imgsearch.storage.errors import UserError

        return UserError
    raise AttributeError(f"module 'imgsearch' has no attribute {name!r}")


__all__ = [*_API, "UserError"]
