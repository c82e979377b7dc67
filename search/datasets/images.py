"""Decode image files (from a folder or a zip) into one uint8 array, on every core."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from search.errors import UserError

# More unreadable images than this fraction is an error rather than a warning.
MAX_BAD_FRACTION = 0.01
# Below this many images a process pool costs more than it saves.
_POOL_MIN_IMAGES = 500

_zip_handles: dict[str, zipfile.ZipFile] = {}


def _read(source: str, member: str) -> bytes:
    if source.endswith(".zip"):
        handle = _zip_handles.get(source)
        if handle is None:
            handle = _zip_handles[source] = zipfile.ZipFile(source)
        return handle.read(member)
    return Path(source, member).read_bytes()


def _to_square_rgb(data: bytes, size: int, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB" if channels == 3 else "L")
        if img.size != (size, size):
            shrinking = min(img.size) > size
            method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
            img = ImageOps.fit(img, (size, size), method=method)
        array = np.asarray(img, dtype=np.uint8)
    return array.reshape(size, size, channels)


def _die_with(parent: int) -> None:
    """Pool initializer: the kernel kills this decoder when its parent dies, kill -9 included,
    which Python's pool cannot notice (its decoders would run on for minutes). Linux's
    PR_SET_PDEATHSIG; elsewhere nothing changes."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _decode_chunk(source: str, members: list[str], size: int, channels: int):
    images = np.zeros((len(members), size, size, channels), dtype=np.uint8)
    ok = np.ones(len(members), dtype=bool)
    for i, member in enumerate(members):
        try:
            images[i] = _to_square_rgb(_read(source, member), size, channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, zipfile.BadZipFile):
            ok[i] = False
    return images, ok


def decode_images(
    source: Path, members: list[str], size: int, channels: int = 3, what: str = "images"
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``members`` of ``source`` (a folder or a .zip) into (N, size, size, channels).

    Images that are not ``size`` square are centre-cropped to a square and resized.
    Returns the images that decoded and a boolean mask over ``members`` of those that did.
    Unreadable images are skipped and counted on stderr; more than MAX_BAD_FRACTION of
    them raises UserError naming the first few.
    """
    n_workers = os.cpu_count() or 1
    if len(members) < _POOL_MIN_IMAGES or n_workers == 1:
        images, ok = _decode_chunk(str(source), members, size, channels)
    else:
        n_chunks = n_workers * 8
        chunks = [members[i::n_chunks] for i in range(n_chunks)]
        # spawn, not fork: the parent may already hold TensorFlow's threads.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=_die_with, initargs=(os.getpid(),)) as pool:
            parts = list(pool.map(_decode_chunk, [str(source)] * n_chunks, chunks,
                                  [size] * n_chunks, [channels] * n_chunks))
        images = np.zeros((len(members), size, size, channels), dtype=np.uint8)
        ok = np.zeros(len(members), dtype=bool)
        for i, (chunk_images, chunk_ok) in enumerate(parts):
            images[i::n_chunks] = chunk_images
            ok[i::n_chunks] = chunk_ok
    bad = [m for m, good in zip(members, ok) if not good]
    if len(bad) > MAX_BAD_FRACTION * len(members):
        raise UserError(
            f"{source}: {len(bad)} of {len(members)} {what} are unreadable or corrupt "
            f"(e.g. {', '.join(bad[:3])}); more than {MAX_BAD_FRACTION:.0%} is too many"
        )
    if bad:
        print(f"warning: skipped {len(bad)} unreadable {what} in {source} (e.g. {bad[0]})", file=sys.stderr)
    return images[ok], ok


def resize_images(x: np.ndarray, size: int) -> np.ndarray:
    """Resize a uint8 (N, H, W, C) array to (N, size, size, C), as decode_images would."""
    if x.shape[1:3] == (size, size):
        return x
    channels = x.shape[-1]
    out = np.empty((len(x), size, size, channels), dtype=np.uint8)
    shrinking = min(x.shape[1:3]) > size
    method = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    for i, image in enumerate(x):
        img = Image.fromarray(image[..., 0] if channels == 1 else image)
        out[i] = np.asarray(ImageOps.fit(img, (size, size), method=method)).reshape(size, size, channels)
    return out
