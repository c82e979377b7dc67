"""Shared fixtures: the ../shared data, generated Tiny ImageNet trees, isolated run folders."""

from __future__ import annotations

import contextlib
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _require_shared(relative: str) -> Path:
    """``../shared/<relative>``; skipped when absent, a failure when REQUIRE_SHARED=1 (CI)."""
    path = SHARED / relative
    if not path.exists():
        if os.environ.get("REQUIRE_SHARED") == "1":
            pytest.fail(f"REQUIRE_SHARED=1 but {SHARED} has no {relative}")
        pytest.skip(f"{SHARED / relative} is not present")
    return path


@pytest.fixture
def shared_dir() -> Path:
    """../shared, holding the Tiny ImageNet sample."""
    _require_shared("datasets/tiny-imagenet-sample.zip")
    return SHARED


@pytest.fixture
def shared_weights() -> Path:
    """../shared/weights, holding Keras's MobileNet v1 (alpha 0.25) ImageNet weights."""
    _require_shared("weights/mobilenet_2_5_224_tf_no_top.h5")
    return SHARED / "weights"


def jpeg_bytes(seed: int, size: int = 64) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="JPEG")
    return buf.getvalue()


def make_tiny_tree(root: Path, classes=("n001", "n002", "n003"), per_class: int = 6, val_per_class: int = 2) -> Path:
    """A miniature tiny-imagenet-200 folder in the official layout under ``root``."""
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(classes) + "\n")
    (base / "words.txt").write_text("".join(f"{c}\tthing {c}, other name\n" for c in classes))
    seed = 0
    for c in classes:
        images = base / "train" / c / "images"
        images.mkdir(parents=True)
        for i in range(per_class):
            (images / f"{c}_{i}.JPEG").write_bytes(jpeg_bytes(seed := seed + 1))
        (base / "train" / c / f"{c}_boxes.txt").write_text("")
    lines = []
    for c in classes:
        for i in range(val_per_class):
            name = f"val_{c}_{i}.JPEG"
            (base / "val" / "images" / name).write_bytes(jpeg_bytes(seed := seed + 1))
            lines.append(f"{name}\t{c}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (base / "test" / "images" / "test_0.JPEG").write_bytes(jpeg_bytes(999))
    return base


def zip_tree(base: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(base.rglob("*")):
            zf.write(path, path.relative_to(base.parent).as_posix())
    return archive


def wait_for_http(url: str, process, log: Path, seconds: float = 120) -> None:
    """Poll ``url`` until it answers; fail with ``log``'s tail if ``process`` exits or time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serving(target: str, port: int, env: dict, log_path: Path, ready: str | None = None):
    """``make <target>`` running until the block ends, once it answers on ``port`` (and, with
    ``ready``, once its output holds that text); yields the process."""
    import signal
    import subprocess
    import time

    with log_path.open("w") as log:
        make = subprocess.Popen(["make", "--no-print-directory", target], cwd=REPO, env={**os.environ, **env},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", make, log_path)
        deadline = time.monotonic() + 60
        while ready and ready not in log_path.read_text():
            assert make.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        yield make
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGTERM)
        make.wait(timeout=60)


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    return make_tiny_tree(tmp_path / "data")


@pytest.fixture
def runs_env(tmp_path, monkeypatch) -> dict:
    """RUNS_DIR / DATA_DIR in tmp_path, and no stray settings from the caller's environment."""
    from search.cli import OPTIONS

    for name in OPTIONS:
        monkeypatch.delenv(name.upper(), raising=False)
    env = {"RUNS_DIR": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "data")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env
