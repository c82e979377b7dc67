"""Shared fixtures: the ../shared data, generated Tiny ImageNet trees, isolated run folders."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    """../shared; skipped when absent, a failure when REQUIRE_SHARED=1 (CI)."""
    if not (SHARED / "datasets" / "tiny-imagenet-sample.zip").is_file():
        if os.environ.get("REQUIRE_SHARED") == "1":
            pytest.fail(f"REQUIRE_SHARED=1 but {SHARED} has no datasets/tiny-imagenet-sample.zip")
        pytest.skip(f"{SHARED} with the Tiny ImageNet sample is not present")
    return SHARED


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
