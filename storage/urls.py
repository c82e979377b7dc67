"""Storage URLs: the default one, validation, and masking passwords for display."""

from __future__ import annotations

from pathlib import Path

from imgsearch.storage.errors import UserError

# The drivers a database URL may name and the package that brings each (``pip install``).
DRIVER_PACKAGES = {"pymysql": "the mysql extra: pip install -e '.[mysql]'", "MySQLdb": "mysqlclient",
                   "psycopg2": "psycopg2-binary", "psycopg": "psycopg", "mysql": "mysql-connector-python"}


def default_storage_url(study_db: Path) -> str:
    """The SQLite URL of the default study database (absolute, so any cwd reaches it)."""
    return f"sqlite:///{study_db.resolve()}"


def mask_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; safe to print or log."""
    from sqlalchemy.engine import make_url  # here, not above: the CLI checks input before SQLAlchemy loads
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<malformed storage URL>"


def check_database_url(env: str, url: str) -> None:
    """A SQLAlchemy URL whose driver is installed; the missing package is named."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        make_url(url).get_dialect().import_dbapi()
    except ArgumentError:
        raise UserError(f"{env} {mask_url(url)!r} is not a database URL "
                        "(expected e.g. sqlite:///runs/optuna.db or postgresql://user@host:5432/db)") from None
    except NoSuchModuleError:
        raise UserError(f"{env} {mask_url(url)}: unknown database or driver "
                        f"{make_url(url).drivername!r} (SQLAlchemy has no such dialect)") from None
    except ImportError as exc:
        module = (exc.name or "").split(".")[0]
        package = DRIVER_PACKAGES.get(module, module or "its driver")
        raise UserError(f"{env} {mask_url(url)}: the driver {module or '?'} is not installed; "
                        f"install {package}") from None

