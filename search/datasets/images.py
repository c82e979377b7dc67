"""Decode image files (from a folder or a zip) into one uint8 array, on every core."""

from __future__ import annotations

import io
import multiprocessing
import os
import sys
import zipfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from imgsearch.datasets.base import check_fits_in_memory
from imgsearch.storage.errors import UserError
from imgsearch.storage.machine import die_with_parent

# More unreadable images than this fraction is an error rather than a warning.
MAX_BAD_FRACTION = 0.01
# Below this many images a process pool costs more than it saves.
_POOL_MIN_IMAGES = 500
# Images per decoder task: small enough that the chunks in flight cost little memory.
_CHUNK = 256

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


def _decode_chunk(source: str, members: list[str], size: int, channels: int):
    images = np.zeros((len(members), size, size, channels), dtype=np.uint8)
    ok = np.ones(len(members), dtype=bool)
    for i, member in enumerate(members):
        try:
            images[i] = _to_square_rgb(_read(source, member), size, channels)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, zipfile.BadZipFile):
            ok[i] = False
    return images, ok


def _decode_all(source: str, members: list[str], size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """All ``members`` into one array. The decoders' chunks are copied in as they arrive, so
    memory holds the result once plus a few chunks (not every chunk and then the result)."""
    n_workers = os.cpu_count() or 1
    if len(members) < _POOL_MIN_IMAGES or n_workers == 1:
        return _decode_chunk(source, members, size, channels)
    images = np.empty((len(members), size, size, channels), dtype=np.uint8)
    ok = np.empty(len(members), dtype=bool)
    starts = range(0, len(members), _CHUNK)
    chunks = [members[start:start + _CHUNK] for start in starts]
    # spawn, not fork: the parent may already hold TensorFlow's threads.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(n_workers, mp_context=ctx, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
        decoded = pool.map(_decode_chunk, [source] * len(chunks), chunks,
                           [size] * len(chunks), [channels] * len(chunks))
        for start, (chunk_images, chunk_ok) in zip(starts, decoded):
            images[start:start + len(chunk_ok)] = chunk_images
            ok[start:start + len(chunk_ok)] = chunk_ok
    return images, ok


def decode_images(source: Path, groups: list[tuple[str, list[str]]], size: int,
                  channels: int = 3) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode each group of members of ``source`` (a folder or a .zip) into (N, size, size, channels).

    ``groups`` are (what, members) pairs, e.g. ("training images", [...]); one pool of
    decoders serves them all (starting a pool costs seconds). Images that are not ``size``
    square are centre-cropped to a square and resized. Returns, per group, the images that
    decoded and a boolean mask over its members of those that did; a group whose images all
    decoded gets a view of one shared array, not a copy. Unreadable images are skipped and
    counted on stderr; more than MAX_BAD_FRACTION of a group raises UserError naming a few.
    """
    every = [member for _, members in groups for member in members]
    check_fits_in_memory(len(every), size, channels)
    images, ok = _decode_all(str(source), every, size, channels)
    results, start = [], 0
    for what, members in groups:
        group_images, group_ok = images[start:start + len(members)], ok[start:start + len(members)]
        start += len(members)
        bad = [m for m, good in zip(members, group_ok) if not good]
        if len(bad) > MAX_BAD_FRACTION * len(members):
            raise UserError(
                f"{source}: {len(bad)} of {len(members)} {what} are unreadable or corrupt "
                f"(e.g. {', '.join(bad[:3])}); more than {MAX_BAD_FRACTION:.0%} is too many"
            )
        if bad:
            print(f"warning: skipped {len(bad)} unreadable {what} in {source} (e.g. {bad[0]})", file=sys.stderr)
            group_images = group_images[group_ok]
        results.append((group_images, group_ok))
    return results


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
