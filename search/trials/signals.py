"""SIGINT and SIGTERM end a search cleanly: the running trial is closed as failed on the way out.

Python raises KeyboardInterrupt wherever the main thread happens to be. Raised inside
TensorFlow (while it traces a function or drives a data pipeline) it can be swallowed or
turned into another error, and the search goes on: seen in a test, as "ValueError: None
values not supported" and 25 more trials. So while a trial trains (``deferred``), a signal is
only recorded, and ``raise_pending`` raises it at the next safe point: a batch end, the end
of the trial's training, or right after the trial (a study callback). A second signal raises
at once, and so does one outside a trial.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """The process got SIGTERM. A KeyboardInterrupt, so Optuna and our Objective close the
    running trial (FAIL, MLflow run ended) exactly as they do for Ctrl-C."""


_pending: int | None = None
_deferring = False


def _exception(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handle(signum, frame) -> None:
    global _pending
    if _deferring and _pending is None:
        _pending = signum
        return
    raise _exception(signum)


def install() -> None:
    """From now on SIGTERM raises Terminated and SIGINT KeyboardInterrupt, in the main thread."""
    signal.signal(signal.SIGTERM, _handle)
    signal.signal(signal.SIGINT, _handle)


@contextmanager
def installed():
    """``install`` for the block only: the handlers that were there before are put back after it
    (the Python API, whose caller's process outlives the search). Outside the main thread, where
    Python takes no handlers, the block runs with the caller's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    install()
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def raise_pending() -> None:
    """Raise the signal recorded while deferred, if any."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise _exception(signum)


def after_trial(study, trial) -> None:
    """Study callback: raise a signal that came while the trial was being closed."""
    raise_pending()


@contextmanager
def deferred():
    """Record signals instead of raising them inside the block (``raise_pending`` raises them)."""
    global _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
