"""SIGTERM ends a search like Ctrl-C: the running trial is closed as failed on the way out."""

from __future__ import annotations

import signal


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM. A KeyboardInterrupt, so Optuna and our Objective close the
    running trial (FAIL, MLflow run ended) exactly as they do for Ctrl-C."""


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises Terminated in the main thread."""

    def handler(signum, frame):
        raise Terminated()

    signal.signal(signal.SIGTERM, handler)
