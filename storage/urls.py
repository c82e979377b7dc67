"""Storage URLs: the default one, validation, and masking passwords for display."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from search.errors import UserError


def default_storage_url(study_db: Path) -> str:
    """The SQLite URL of the default study database (absolute, so any cwd reaches it)."""
    return f"sqlite:///{study_db.resolve()}"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; safe to print or log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed storage URL>"


def check_url(url: str) -> None:
    """Raise UserError unless ``url`` is a SQLAlchemy URL with a driver we can load."""
    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except ArgumentError:
        raise UserError(
            f"STORAGE {mask_url(url)!r} is not a database URL "
            "(expected e.g. sqlite:///runs/optuna.db or postgresql://user@host:5432/db)"
        ) from None
    except Exception as exc:  # NoSuchModuleError, missing DBAPI driver
        raise UserError(f"STORAGE {mask_url(url)}: unsupported database ({exc})") from None
