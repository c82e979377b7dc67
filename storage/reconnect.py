"""Riding out a study database that goes away for a while (a restart, a network blip).

Optuna's RDBStorage turns the first failed statement into a StorageInternalError and
has no retry of its own; SQLAlchemy's ``pool_pre_ping`` only replaces connections that
are already dead when checked out. ``ReconnectingStorage`` adds the missing piece: a
call that fails because the connection is lost is retried with backoff for a bounded
time, after which the process stops with ``DatabaseLost`` (one line for the user).
"""

from __future__ import annotations

import functools
import sys
import time

import optuna
from sqlalchemy import exc as sa_exc

from imgsearch.storage.compat import RDB_PRIVATE_CALLS
from imgsearch.storage.errors import UserError
from imgsearch.storage.files import disk_full_message, is_disk_full
from imgsearch.storage.urls import mask_url

FIRST_WAIT_S = 0.5
LONGEST_WAIT_S = 8.0


class DatabaseLost(UserError):
    """The study database stayed unreachable for the whole retry time."""


def is_connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` (or the SQLAlchemy error Optuna wrapped in it) means the database
    could not be reached, as opposed to a statement it refused."""
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        exc = exc.__cause__
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    # PendingRollbackError: a statement after the one that lost the connection, in the same
    # transaction (Optuna's _get_trials reads twice in one session); the next call reconnects.
    return isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.PendingRollbackError))


class ReconnectingStorage(optuna.storages.RDBStorage):
    """RDBStorage whose calls survive a lost database for up to ``retry_seconds``.

    A call that fails with a lost connection is retried, waiting 0.5 s and doubling up
    to 8 s, until it succeeds or ``retry_seconds`` have passed since it first failed;
    then it raises DatabaseLost, and so does every later call at once: the process is to
    stop (its running trial goes stale and another worker, or the resumed search, retries
    it). A heartbeat that fails is skipped, not retried: the next one is due soon anyway.
    One line on stderr says when the database was lost and when it came back.
    """

    def __init__(self, url: str, retry_seconds: float, **kwargs):
        super().__init__(url, **kwargs)
        self.retry_seconds = retry_seconds
        self.lost: DatabaseLost | None = None  # set once the retry time ran out

    def _call(self, method, *args, **kwargs):
        if self.lost is not None:
            raise self.lost
        first_failure = None
        wait = FIRST_WAIT_S
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                if is_disk_full(exc):  # SQLite says so as an OperationalError: not a lost connection
                    self.lost = DatabaseLost(disk_full_message(f"cannot write the study database {mask_url(self.url)}"))
                    raise self.lost from None
                if not is_connection_lost(exc):
                    raise
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    self._say(f"cannot reach the study database {mask_url(self.url)} ({_reason(exc)}); "
                              f"retrying for up to {self.retry_seconds:g} s")
                if now - first_failure >= self.retry_seconds or self.lost is not None:
                    self.lost = self.lost or DatabaseLost(
                        f"study database {mask_url(self.url)} unreachable for {self.retry_seconds:g} s "
                        f"({_reason(exc)}); run the same command again to resume once it is back")
                    raise self.lost from None
                time.sleep(min(wait, max(0.0, first_failure + self.retry_seconds - now)))
                wait = min(2 * wait, LONGEST_WAIT_S)
            else:
                if first_failure is not None:
                    self._say(f"study database reachable again after {time.monotonic() - first_failure:.0f} s")
                return result

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if not is_connection_lost(exc):
                raise

    @staticmethod
    def _say(line: str) -> None:
        print(f"storage: {line}", file=sys.stderr, flush=True)


def _reason(exc: BaseException) -> str:
    cause = exc.__cause__ if isinstance(exc, optuna.exceptions.StorageInternalError) else exc
    text = str(getattr(cause, "orig", None) or cause).strip()
    return text.splitlines()[0][:200] if text else type(cause).__name__


def _retried(name: str):
    method = getattr(optuna.storages.RDBStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return self._call(method, *args, **kwargs)

    return call


# Every call that reaches the database: the storage interface, and the RDBStorage methods
# that Optuna's cache in front of it (_CachedStorage) calls directly. record_heartbeat is
# handled above.
_RDB_CALLS = RDB_PRIVATE_CALLS | {"get_best_trial", "get_trial_id_from_study_id_trial_number"}
for _name in sorted(optuna.storages.BaseStorage.__abstractmethods__ | _RDB_CALLS):
    setattr(ReconnectingStorage, _name, _retried(_name))
