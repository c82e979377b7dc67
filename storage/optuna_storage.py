"""Build the Optuna storage for a SQLAlchemy URL."""

from __future__ import annotations

import time
import warnings

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from imgsearch.storage import DB_RETRY_SECONDS
from imgsearch.storage.errors import UserError
from imgsearch.storage.reconnect import ReconnectingStorage
from imgsearch.storage.urls import check_database_url, mask_url

# Seconds a SQLite writer waits for another process's lock before failing.
SQLITE_BUSY_TIMEOUT_S = 60
# Opening tries while another process creates the schema at the same moment.
_OPEN_ATTEMPTS = 5


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
    for attempt in range(_OPEN_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # the heartbeat is experimental in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return ReconnectingStorage(url, retry_seconds, engine_kwargs=engine_kwargs,
                                           heartbeat_interval=heartbeat,
                                           grace_period=3 * heartbeat if heartbeat else None)
        except (SQLAlchemyError, OSError) as exc:
            if _created_by_another(exc) and attempt < _OPEN_ATTEMPTS - 1:
                time.sleep(0.1 * (attempt + 1))  # until the other process's version rows are committed
                continue
            raise UserError(f"cannot open study storage {mask_url(url)} ({_where(url)}): {_first_line(exc)}") from None


def _created_by_another(exc: BaseException) -> bool:
    """Whether another process created the schema at the same moment: Optuna's create_all and
    its version rows (alembic_version, version_info) are not atomic across processes, so one of
    the two fails on a table or row the other just wrote; the schema exists now, and opening
    again works."""
    text = str(exc)
    return "already exists" in text or (
        isinstance(exc, IntegrityError) and ("alembic_version" in text or "version_info" in text))


def _where(url: str) -> str:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or "memory"
    return f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
