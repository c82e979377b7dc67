"""Build the Optuna storage for a SQLAlchemy URL."""

from __future__ import annotations

import warnings

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from imgsearch.storage import DB_RETRY_SECONDS
from imgsearch.storage.errors import UserError
from imgsearch.storage.reconnect import ReconnectingStorage
from imgsearch.storage.urls import check_database_url, mask_url

# Seconds a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_S = 60


def open_storage(url: str, heartbeat: int | None = None,
                 retry_seconds: float = DB_RETRY_SECONDS) -> optuna.storages.RDBStorage:
    """Optuna's RDBStorage on ``url``; creates the schema on first use.

    A database lost later is retried for ``retry_seconds`` (see ReconnectingStorage).

    With ``heartbeat`` (seconds), a running trial records a heartbeat that often, and one
    silent for 3 heartbeats is stale (its worker died): Optuna fails it when a worker next
    starts a trial, and calls the storage's ``heartbeat_stale_trial_callback``.
    Raises UserError (password masked) when the URL is malformed or the database
    cannot be reached.
    """
    check_database_url("STORAGE", url)
    engine_kwargs: dict = {"pool_pre_ping": True}
    if make_url(url).get_backend_name() == "sqlite":
        engine_kwargs = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_S}}
    for attempt in range(3):
        try:
            with warnings.catch_warnings():  # the heartbeat is experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return ReconnectingStorage(url, retry_seconds, engine_kwargs=engine_kwargs,
                                           heartbeat_interval=heartbeat,
                                           grace_period=3 * heartbeat if heartbeat else None)
        except (SQLAlchemyError, OSError) as exc:
            # Another process created the schema at the same moment (Optuna's create_all is
            # not atomic across processes): it exists now, so opening again works.
            if "already exists" in str(exc) and attempt < 2:
                continue
            raise UserError(f"cannot open study storage {mask_url(url)} ({_where(url)}): {_first_line(exc)}") from None


def _where(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "memory"
    return f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
