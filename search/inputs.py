"""Every setting's type and check, applied before anything is created or TensorFlow imported.

A bad value ends the command with one ``error:`` line in well under 2 s: this module imports
nothing heavy (no Keras, Optuna or MLflow), and the checks that need a library (the database
driver, the MLflow server) touch only that library.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from storage.errors import UserError

# Study names become folder and file names (checkpoints, exports, MLflow artifacts) and the
# registered model's name: one path segment, short enough for any file system.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MLFLOW_PROBE_TIMEOUT_S = 5


@dataclass(frozen=True)
class Option:
    """One setting: its type, help, and the values it accepts (``low``/``high`` inclusive,
    ``above`` exclusive, ``choices``, or a ``check`` of its own raising UserError)."""

    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    above: float | None = None
    choices: tuple[str, ...] | None = None
    check: Callable[[str, object], None] | None = None

    def validate(self, name: str, value) -> None:
        env = name.upper()
        shown = _number(value) if isinstance(value, float) else value
        if self.low is not None and value < self.low or self.high is not None and value > self.high:
            bounds = (f"from {_number(self.low)} to {_number(self.high)}" if self.high is not None
                      else f"at least {_number(self.low)}")
            raise UserError(f"{env}={shown}: must be {bounds}")
        if self.above is not None and not value > self.above:
            raise UserError(f"{env}={shown}: must be more than {_number(self.above)}")
        if self.choices is not None and value not in self.choices:
            raise UserError(f"unknown {env} {value!r}; choose one of: {', '.join(self.choices)}")
        if self.check is not None:
            self.check(env, value)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def check_study_name(env: str, name: str) -> None:
    if not STUDY_NAME.fullmatch(name):
        raise UserError(f"{env}={name[:120]!r}: use up to 100 letters, digits, '.', '_' or '-', "
                        "starting with a letter or digit (it names folders and the registered model)")


def check_tracking_uri(env: str, uri: str) -> None:
    """An MLflow server that answers, a database URL MLflow can use, or Databricks.

    MLflow's file store (``file:`` or a bare path) is refused: MLflow 3 itself refuses it
    ("maintenance mode") unless told otherwise, and says so with a traceback. An unreachable
    server is found here, in at most 5 s, rather than after MLflow's own retries (minutes)
    with the study already created.
    """
    from storage.urls import check_database_url, mask_url

    scheme = urlsplit(uri).scheme.lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=MLFLOW_PROBE_TIMEOUT_S):
                return
        except urllib.error.HTTPError as exc:
            raise UserError(f"{env} {mask_url(uri)}: not an MLflow server (/health answered HTTP {exc.code})") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(f"{env} {mask_url(uri)}: no MLflow server answers there ({reason})") from None
    if scheme.startswith("databricks"):
        return
    if scheme in ("", "file"):
        raise UserError(f"{env}={uri}: MLflow 3 no longer takes a file store; use a database "
                        "(sqlite:///path/mlflow.db) or a tracking server (http://host:5000)")
    check_database_url(env, uri)
