"""Storage URLs: the default one, validation, and masking passwords for display."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError


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
    from search.inputs import check_database_url

    check_database_url("STORAGE", url)
