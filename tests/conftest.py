"""Shared fixtures: the ../shared data, generated Tiny ImageNet trees, isolated run folders."""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# Started first, so that the test processes (make test runs two) end together: the longest
# tests, by the durations make test prints.
LONGEST_FIRST = ("test_compose_stack.py", "test_workers.py", "test_faults.py", "test_inputs.py", "test_browser.py",
                 "test_cli.py", "test_autokeras.py", "test_finetune.py", "test_database_lost.py")


def pytest_collection_modifyitems(items):
    order = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: a file's own order is kept


def pytest_configure(config):
    """One line, instead of groups silently split across test processes, on pytest 9.2 and later:
    pytest-xdist (3.8) groups ``--dist loadgroup`` by a suffix written into node ids, which
    pytest 9.2 ignores (pytest-xdist#1386); the browser module's searches would run twice."""
    if config.getoption("dist", "no") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        raise pytest.UsageError(f"pytest {pytest.__version__} breaks --dist loadgroup (pytest-xdist#1386): "
                                "make install gives the pinned one")


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


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target`` until cut (every connection dropped, new ones refused);
    ``start`` again listens on the same port."""

    def __init__(self, target: tuple[str, int]):
        self.target, self.port = target, 0
        self.server: socket.socket | None = None
        self.sockets: list[socket.socket] = []

    def start(self) -> None:
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", self.port))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
                upstream = socket.create_connection(self.target)
            except OSError:
                return
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass

    def cut(self) -> None:
        for sock in [self.server, *self.sockets]:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.sockets = []


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the server .ci/run starts (trust auth)


@pytest.fixture(scope="module")
def pg():
    """One Optuna storage on the PostgreSQL test database for a test's reads (one connection pool:
    a new one per poll exhausts the server)."""
    import optuna

    storage = optuna.storages.RDBStorage(POSTGRES_URL)
    yield storage
    storage.engine.dispose()


@pytest.fixture
def pg_study(pg) -> str:
    """A fresh study name in the PostgreSQL test database; the study is deleted afterwards."""
    import uuid

    import optuna

    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    if name in optuna.get_all_study_names(pg):
        optuna.delete_study(study_name=name, storage=pg)


def run_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    """``python -m imgsearch *args`` in a real process with ``env`` added to this one's."""
    return subprocess.run([sys.executable, "-m", "imgsearch", *args], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=600)


def run_main(capsys, env: dict, *args: str) -> subprocess.CompletedProcess:
    """``imgsearch *args`` as ``run_cli`` runs it, but in this process (``main()``): for tests
    where a process boundary is not the point, without another TensorFlow start-up (~8 s)."""
    from imgsearch.command_line.main import main

    capsys.readouterr()
    with pytest.MonkeyPatch.context() as patch:  # ``env`` for this call only
        for key, value in env.items():
            patch.setenv(key, value)
        code = main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["imgsearch", *args], code, out.out, out.err)


@pytest.fixture
def tiny_tree(tmp_path) -> Path:
    return make_tiny_tree(tmp_path / "data")


@pytest.fixture
def runs_env(tmp_path, monkeypatch) -> dict:
    """RUNS_DIR / DATA_DIR in tmp_path, and no stray settings from the caller's environment."""
    from imgsearch.settings import SETTINGS

    for setting in SETTINGS:
        monkeypatch.delenv(setting.env, raising=False)
    env = {"RUNS_DIR": str(tmp_path / "runs"), "DATA_DIR": str(tmp_path / "data")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


# A one-layer mlp that learns digits (above 0.8 validation accuracy) in 1-3 epochs.
GOOD_MLP = {"layers": 1, "units": 256, "activation": "relu", "batch_norm": False, "dropout": 0.0,
            "optimizer": "adam", "learning_rate": 3e-3, "weight_decay": 1e-6, "label_smoothing": 0.0, "batch_size": 32}


@pytest.fixture(scope="session")
def digits(tmp_path_factory):
    """scikit-learn's digits (8x8 gray, 10 classes), prepared once for the session."""
    from imgsearch.datasets import DatasetSpec

    return DatasetSpec("digits").load(tmp_path_factory.mktemp("data"))


def new_search(root: Path, data, space: str = "mlp", *, epochs: int = 3, pruner=None, first_trials=(), **settings):
    """The ``Search`` the search command builds (``commands.prepare``) from these settings, on a
    new study (SQLite) and MLflow store in RUNS_DIR ``root``, on ``data`` (a Dataset already in
    memory). ``settings``: more settings by name (``trials``, ``budget``, a space's options...);
    ``pruner``: an Optuna pruner object to replace the study's (PRUNER names Optuna's own only);
    ``first_trials``: the params queued first (none: a test queues its own; None: the space's)."""
    from imgsearch.command_line.commands import prepare
    from imgsearch.settings import resolve

    args = resolve({"runs_dir": str(root), "space": space, "epochs": epochs, "seed": 0, "pruner": "none",
                    "trials_per_process": 0, **settings})
    prepared = prepare(args, creating=True, data=data, first_trials=None if first_trials is None else list(first_trials))
    if pruner is not None:
        prepared.study.pruner = pruner
    return prepared.search()


def trial_runs(tracker) -> dict:
    """The study's trial runs in MLflow, by trial number."""
    runs = tracker.client.search_runs(
        [tracker.experiment_id], f"tags.mlflow.parentRunId = '{tracker.parent_run_id}'", order_by=["start_time ASC"]
    )
    return {int(run.data.tags["optuna.trial"]): run for run in runs}


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1 (SQLite backend store, proxied artifacts), one
    for the session: its tests are in the ``mlflow_server`` xdist group, so that one test
    process starts it once. Each test uses experiments of its own study names."""
    import signal

    tmp_path = tmp_path_factory.mktemp("mlflow-server")
    log = (tmp_path / "mlflow-server.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(free_port()),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(tmp_path / "server-artifacts")],
        stdout=log, stderr=log, start_new_session=True)
    url = f"http://127.0.0.1:{server.args[server.args.index('--port') + 1]}"
    wait_for_http(f"{url}/health", server, tmp_path / "mlflow-server.log")
    yield url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)
    log.close()
