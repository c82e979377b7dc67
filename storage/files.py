"""Files the search writes: whole or not at all, a full disk said as such, leftovers removed.

Every file is written under a temporary name in its own folder, then renamed over the real
one, so a killed process or a full disk never leaves half a file where a reader looks.
A temporary name carries the host and process that wrote it (``.<host>.<pid>.tmp.<name>``,
ending like the real name, as Keras wants ``.keras``): a later process removes the ones whose
writer is gone, and leaves alone those of a live process or of another host (workers on
other machines or containers may share the folder).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from imgsearch.storage.errors import UserError
from imgsearch.storage.machine import alive

DISK_FULL = "disk full"  # how every message about a full disk starts
HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())
# NumPy's tofile on a full disk: an OSError with no errno ("82752 requested and 3968 written").
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")
_TEMP = re.compile(r"\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.tmp\.")


def temp_path(path: Path) -> Path:
    """The temporary name this process writes ``path`` under."""
    return path.parent / f".{HOST}.{os.getpid()}.tmp.{path.name}"


def write_atomic(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``; on any error nothing is left at
    ``tmp`` and ``path`` is as it was. A full disk raises UserError (``DiskFull``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        _remove(tmp)
        if is_disk_full(exc):
            raise DiskFull(path) from None
        raise
    return path


@contextmanager
def locked(lock_file: Path) -> Iterator[None]:
    """Held while this process has an exclusive lock on ``lock_file`` (created if need be):
    other processes of any host sharing the folder wait for it."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def scratch_folder(folder: Path) -> Iterator[Path]:
    """A temporary folder in ``folder``, named as this process's temporary files are, that
    Python's ``tempfile`` uses while the block runs (libraries write their scratch files
    there, not in the system's temporary folder); removed afterwards, or by
    ``remove_leftovers`` after a kill."""
    scratch = temp_path(folder / "scratch")
    scratch.mkdir(parents=True, exist_ok=True)
    before, tempfile.tempdir = tempfile.tempdir, str(scratch)
    try:
        yield scratch
    finally:
        tempfile.tempdir = before
        _remove(scratch)


def remove_leftovers(folder: Path) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` left by processes of this host
    that no longer run; return them."""
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP.match(entry.name)
        if match and match["host"] == HOST and not alive(int(match["pid"])):
            _remove(entry)
            removed.append(entry)
    return removed


def disk_full_message(what: str) -> str:
    """What every full-disk error says: ``what`` could not be done, and what to do."""
    return f"{DISK_FULL}: {what}; free some space and run the same command again (finished trials are kept)"


class DiskFull(UserError):
    """No space left where a file had to be written."""

    def __init__(self, path: Path):
        free = _free_mb(path)
        where = f" ({free} MB free there)" if free is not None else ""
        super().__init__(disk_full_message(f"cannot write {path}{where}"))


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc``, or an exception it was raised from, says the disk is full (an OSError
    ENOSPC, SQLite's "database or disk is full" however a library wrapped it, NumPy's short
    write)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull):
            return True
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(exc)
        if any(words in text for words in ("database or disk is full", "No space left on device",
                                           "Not enough free space")) or _SHORT_WRITE.search(text):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _free_mb(path: Path) -> int | None:
    for folder in (path.parent, *path.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free // 2**20
    return None
