"""Download an archive with a progress bar and verify it before it is used."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from imgsearch.storage.errors import UserError
from imgsearch.storage.files import DiskFull, is_disk_full


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout_s: float = 30.0) -> Path:
    """Fetch ``url`` to ``dest`` (via a .part file) and check its MD5.

    Raises UserError saying where to put the file by hand when the network fails,
    and deletes a download whose checksum is wrong.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}") as bar:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError) as exc:
        part.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise DiskFull(dest) from None
        reason = getattr(exc, "reason", None) or exc
        raise UserError(
            f"cannot download {url} ({reason}); offline? put {dest.name} in {dest.parent}/ and run again"
        ) from None
    actual = md5sum(part)
    if actual != md5:
        part.unlink(missing_ok=True)
        raise UserError(f"download of {url} is corrupt (md5 {actual}, expected {md5}); run again")
    os.replace(part, dest)
    return dest
