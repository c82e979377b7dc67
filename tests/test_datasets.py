"""Loaders, the validation carve, the cache and every bad-data error."""

from __future__ import annotations

import http.server
import shutil
import threading
from functools import partial

import numpy as np
import pytest

from conftest import jpeg_bytes, make_tiny_tree, zip_tree
from imgsearch.datasets import DatasetSpec
from imgsearch.datasets import base as base_module
from imgsearch.datasets import images as images_module
from imgsearch.datasets.download import download, md5sum
from imgsearch.storage.errors import UserError


def test_digits_splits_are_uint8_disjoint_and_stratified(tmp_path):
    data = DatasetSpec("digits").load(tmp_path)
    assert data.x_train.dtype == np.uint8 and data.x_train.shape[1:] == (8, 8, 1)
    assert data.x_train.max() > 200  # 0..16 rescaled to 0..255
    assert len(data.y_train) + len(data.y_val) + len(data.y_test) == 1797
    assert len(data.y_val) == pytest.approx(0.1 * (len(data.y_train) + len(data.y_val)), abs=1)
    assert set(np.unique(data.y_val)) == set(range(10))  # stratified: every class in val
    train_rows = {row.tobytes() for row in np.asarray(data.x_train).reshape(len(data.x_train), -1)}
    val_rows = [row.tobytes() for row in np.asarray(data.x_val).reshape(len(data.x_val), -1)]
    assert sum(r in train_rows for r in val_rows) < len(val_rows)  # not a copy of train


def test_second_load_memory_maps_the_cache_without_preparing(tmp_path, monkeypatch):
    spec = DatasetSpec("digits", image_size=16)
    first = spec.load(tmp_path)
    assert first.x_train.shape[1:] == (16, 16, 1)
    monkeypatch.setattr(DatasetSpec, "_prepare", lambda *_: pytest.fail("cache was not used"))
    second = spec.load(tmp_path)
    assert isinstance(second.x_train, np.memmap)
    np.testing.assert_array_equal(first.x_val, second.x_val)
    assert second.class_names == first.class_names


def test_half_written_cache_is_ignored(tmp_path):
    folder = tmp_path / "cache" / DatasetSpec("digits").cache_key()
    folder.mkdir(parents=True)
    (folder / "x_train.npy").write_bytes(b"garbage")  # no meta.json: incomplete
    assert DatasetSpec("digits").load(tmp_path).x_train.shape[1:] == (8, 8, 1)


def test_validation_carve_uses_a_fixed_seed(tmp_path):
    a = DatasetSpec("digits").load(tmp_path / "a")
    b = DatasetSpec("digits").load(tmp_path / "b")
    np.testing.assert_array_equal(a.y_val, b.y_val)
    assert base_module.SPLIT_SEED == 0


@pytest.mark.parametrize("packed", [False, True], ids=["folder", "zip"])
def test_tinyimagenet_generated_tree(tmp_path, packed):
    base = make_tiny_tree(tmp_path / "src")
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    if packed:
        zip_tree(base, data_dir / "tiny-imagenet-200.zip")
    else:
        shutil.move(base, data_dir / "tiny-imagenet-200")
    data = DatasetSpec("tinyimagenet", image_size=32).load(data_dir)
    assert data.class_names == ["thing n001", "thing n002", "thing n003"]
    assert data.x_train.shape[1:] == (32, 32, 3)
    assert len(data.y_train) + len(data.y_val) == 18 and len(data.y_test) == 6
    np.testing.assert_array_equal(np.bincount(data.y_test), [2, 2, 2])


def test_the_decoder_pool_gives_the_serial_result_in_order(tmp_path, monkeypatch):
    base = make_tiny_tree(tmp_path)
    (base / "train" / "n002" / "images" / "n002_3.JPEG").write_bytes(b"not a jpeg")
    groups = [("training images", sorted(str(p.relative_to(base)) for p in base.glob("train/*/images/*"))),
              ("val images", sorted(str(p.relative_to(base)) for p in base.glob("val/images/*")))]
    monkeypatch.setattr(images_module, "MAX_BAD_FRACTION", 0.1)
    serial = images_module.decode_images(base, groups, 16)
    monkeypatch.setattr(images_module, "_POOL_MIN_IMAGES", 1)
    monkeypatch.setattr(images_module, "_CHUNK", 5)  # chunk edges inside both groups
    pooled = images_module.decode_images(base, groups, 16)
    for (x_serial, ok_serial), (x_pooled, ok_pooled) in zip(serial, pooled):
        np.testing.assert_array_equal(ok_serial, ok_pooled)
        np.testing.assert_array_equal(x_serial, x_pooled)
    (x_train, ok_train), (x_val, ok_val) = pooled
    assert ok_train.sum() == 17 and not ok_train[groups[0][1].index("train/n002/images/n002_3.JPEG")]
    assert len(x_train) == 17 and len(x_val) == 6 and ok_val.all()


def test_keep_rows_in_place_equals_fancy_indexing():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (1000, 2, 2, 1), dtype=np.uint8)
    rows = np.sort(rng.choice(1000, size=900, replace=False))
    want = x[rows]
    kept = base_module.keep_rows(x, rows, chunk=64)
    np.testing.assert_array_equal(kept, want)
    assert np.shares_memory(kept, x)  # no second copy of the largest array
    frozen = want.copy()
    frozen.flags.writeable = False  # a read-only array (a memory map) is copied instead
    np.testing.assert_array_equal(base_module.keep_rows(frozen, np.arange(0, 900, 2)), want[::2])


def test_tinyimagenet_real_sample(shared_dir, tmp_path):
    (tmp_path / "tiny-imagenet-200.zip").symlink_to(shared_dir / "datasets" / "tiny-imagenet-sample.zip")
    data = DatasetSpec("tinyimagenet").load(tmp_path)
    assert data.image_shape == (64, 64, 3) and data.num_classes == 10
    assert len(data.y_train) == 4500 and len(data.y_val) == 500 and len(data.y_test) == 500
    np.testing.assert_array_equal(np.bincount(data.y_val), [50] * 10)
    assert "chimpanzee" in data.class_names
    assert 60 < float(np.asarray(data.x_test).mean()) < 200  # real photos, not blank


def test_missing_val_annotations(tiny_tree):
    (tiny_tree / "val" / "val_annotations.txt").unlink()
    with pytest.raises(UserError, match="missing val/val_annotations.txt"):
        DatasetSpec("tinyimagenet").load(tiny_tree.parent)


def test_class_with_no_images(tiny_tree):
    for image in (tiny_tree / "train" / "n002" / "images").iterdir():
        image.unlink()
    with pytest.raises(UserError, match=r"train/n002/images has no images"):
        DatasetSpec("tinyimagenet").load(tiny_tree.parent)


def test_single_class_tinyimagenet(tmp_path):
    base = make_tiny_tree(tmp_path, classes=("n001",))
    with pytest.raises(UserError, match="found 1 class"):
        DatasetSpec("tinyimagenet").load(base.parent)


def test_corrupt_images_are_skipped_and_counted(tmp_path, capsys):
    base = make_tiny_tree(tmp_path, per_class=40)
    (base / "train" / "n001" / "images" / "n001_0.JPEG").write_bytes(jpeg_bytes(5)[:200])  # truncated
    data = DatasetSpec("tinyimagenet").load(base.parent)
    assert len(data.y_train) + len(data.y_val) == 119
    assert "skipped 1 unreadable training images" in capsys.readouterr().err


def test_too_many_corrupt_images_is_an_error(tiny_tree):
    for i in range(3):
        (tiny_tree / "train" / "n003" / "images" / f"n003_{i}.JPEG").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match=r"3 of 18 training images are unreadable .*n003_0.JPEG"):
        DatasetSpec("tinyimagenet").load(tiny_tree.parent)


def test_truncated_zip(tmp_path):
    archive = zip_tree(make_tiny_tree(tmp_path / "src"), tmp_path / "full.zip")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tiny-imagenet-200.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match="truncated"):
        DatasetSpec("tinyimagenet").load(tmp_path / "data")


def test_offline_without_local_copy_says_where_to_put_the_zip(tmp_path, monkeypatch):
    monkeypatch.setattr("imgsearch.datasets.tinyimagenet.URL", "http://127.0.0.1:9/tiny-imagenet-200.zip")
    with pytest.raises(UserError, match=rf"put tiny-imagenet-200.zip in {tmp_path}/"):
        DatasetSpec("tinyimagenet").load(tmp_path)
    assert not list(tmp_path.glob("*.part"))


@pytest.fixture
def local_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving tmp_path/served."""
    served = tmp_path / "served"
    served.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_verifies_md5(local_server, tmp_path):
    served, url = local_server
    archive = zip_tree(make_tiny_tree(tmp_path / "src"), served / "tiny-imagenet-200.zip")
    dest = tmp_path / "dl" / "tiny-imagenet-200.zip"
    download(f"{url}/tiny-imagenet-200.zip", dest, md5sum(archive))
    assert dest.read_bytes() == archive.read_bytes()
    bad = tmp_path / "dl2" / "tiny-imagenet-200.zip"
    with pytest.raises(UserError, match="corrupt"):
        download(f"{url}/tiny-imagenet-200.zip", bad, "0" * 32)
    assert not bad.exists() and not list(bad.parent.iterdir())


def test_tinyimagenet_downloads_when_no_local_copy(local_server, tmp_path, monkeypatch):
    served, url = local_server
    archive = zip_tree(make_tiny_tree(tmp_path / "src"), served / "tiny-imagenet-200.zip")
    monkeypatch.setattr("imgsearch.datasets.tinyimagenet.URL", f"{url}/tiny-imagenet-200.zip")
    monkeypatch.setattr("imgsearch.datasets.tinyimagenet.MD5", md5sum(archive))
    data = DatasetSpec("tinyimagenet").load(tmp_path / "data")
    assert data.num_classes == 3 and (tmp_path / "data" / "tiny-imagenet-200.zip").is_file()


def make_folder(root, classes=("cat", "dog"), per_class=5, held_out="validation"):
    for split, n in (("train", per_class), (held_out, 2)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                (root / split / c / f"{i}.jpg").write_bytes(jpeg_bytes(hash((split, c, i)) % 1000, size=40 + i))
    return root


@pytest.mark.parametrize("held_out", ["validation", "test"])
def test_folder_dataset(tmp_path, held_out):
    root = make_folder(tmp_path / "photos", held_out=held_out)
    data = DatasetSpec("folder", image_size=24, folder=str(root)).load(tmp_path / "data")
    assert data.class_names == ["cat", "dog"] and data.image_shape == (24, 24, 3)
    assert len(data.y_test) == 4 and len(data.y_train) + len(data.y_val) == 10


def test_folder_cache_notices_new_files(tmp_path):
    root = make_folder(tmp_path / "photos")
    spec = DatasetSpec("folder", image_size=16, folder=str(root))
    assert len(spec.load(tmp_path / "data").y_test) == 4
    (root / "validation" / "cat" / "new.jpg").write_bytes(jpeg_bytes(77))
    assert len(spec.load(tmp_path / "data").y_test) == 5


def test_folder_with_one_class(tmp_path):
    root = make_folder(tmp_path / "photos", classes=("cat",))
    with pytest.raises(UserError, match="found 1 class folder"):
        DatasetSpec("folder", folder=str(root)).load(tmp_path / "data")


def test_folder_with_empty_class(tmp_path):
    root = make_folder(tmp_path / "photos")
    (root / "train" / "bird").mkdir()
    with pytest.raises(UserError, match=r"class folder .*train/bird has no images"):
        DatasetSpec("folder", folder=str(root)).load(tmp_path / "data")


def test_unknown_dataset_and_labels():
    with pytest.raises(UserError, match="unknown DATASET 'imagenet'"):
        DatasetSpec("imagenet")
    with pytest.raises(UserError, match="needs FOLDER"):
        DatasetSpec("folder")


def test_keras_dataset_offline_is_one_clear_error(tmp_path, monkeypatch):
    import keras

    def offline(**_):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(UserError, match=r"cannot download cifar10 .*offline\?"):
        DatasetSpec("cifar10").load(tmp_path)


def test_builtin_keras_datasets_shapes_from_keras_cache(tmp_path, monkeypatch):
    """Shapes/labels of the keras.datasets path, fed by a stand-in for the download only."""
    import keras

    rng = np.random.default_rng(0)
    fake = ((rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), np.arange(40) % 10),
            (rng.integers(0, 255, (20, 28, 28), dtype=np.uint8), np.arange(20) % 10))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda **_: fake)
    data = DatasetSpec("mnist").load(tmp_path)
    assert data.image_shape == (28, 28, 1) and data.class_names[3] == "3"
    assert len(data.y_train) + len(data.y_val) == 40
