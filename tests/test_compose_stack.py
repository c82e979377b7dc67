"""The docker compose stack, started for real: PostgreSQL, the MLflow server, the Optuna dashboard,
one search and two workers on the Tiny ImageNet sample; then ``down`` and ``up`` keep the study.

Images: PYTHON_IMAGE and POSTGRES_IMAGE when set, else the stand-ins that docker/local/images.sh
builds from Debian's packages (no image registry is reachable here). It drives ``docker compose``
or, without that plugin, Debian's ``docker-compose`` (1.29). Skipped without a running Docker
engine; a failure instead when REQUIRE_DOCKER=1 (CI, whose .ci/run installs and starts one).
The stack's containers, network and volumes are removed afterwards; the images are kept as a
build cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request

import optuna
import pytest

from conftest import REPO, free_port
from imgsearch import records

TRIALS = 4


def _skip(reason: str):
    if os.environ.get("REQUIRE_DOCKER") == "1":
        pytest.fail(f"REQUIRE_DOCKER=1 but {reason}")
    pytest.skip(reason)


def _compose_command() -> list[str]:
    """``docker compose`` (v2) where the plugin is there, else Debian's ``docker-compose`` (1.29)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    _skip("neither `docker compose` nor `docker-compose` (Debian: apt-get install docker-compose)")


def _images() -> dict:
    given = {name: os.environ.get(name) for name in ("PYTHON_IMAGE", "POSTGRES_IMAGE")}
    if all(given.values()):
        return given
    if not shutil.which("debootstrap"):
        _skip("no PYTHON_IMAGE / POSTGRES_IMAGE and no debootstrap to build local ones (apt-get install debootstrap)")
    built = subprocess.run(["bash", str(REPO / "docker" / "local" / "images.sh")], capture_output=True, text=True)
    assert built.returncode == 0, built.stdout + built.stderr
    return dict(pair.split("=") for pair in built.stdout.split())


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


def _wait_for(what: str, check, seconds: float = 180):
    """``check()``'s result once it is truthy; a failure after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = check()
            if result:
                return result
        except Exception as error:  # not up yet
            last = error
        else:
            last = None
        assert time.monotonic() < deadline, f"{what} not ready after {seconds:g} s ({last})"
        time.sleep(2)


@pytest.fixture
def stack(tmp_path, shared_dir):
    if not shutil.which("docker"):
        _skip("no docker client (Debian: apt-get install docker.io)")
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        _skip("no running Docker engine (start dockerd)")
    compose = _compose_command()
    sample = shared_dir / "datasets" / "tiny-imagenet-sample.zip"
    ports = {"MLFLOW_PORT": free_port(), "DASHBOARD_PORT": free_port(), "pg": free_port()}
    # The test's own additions: the sample as the dataset's zip, and PostgreSQL published on
    # 127.0.0.1 so that the study can be read from here.
    override = tmp_path / "override.yml"
    mount = f'["{sample}:/data/tiny-imagenet-200.zip:ro"]'
    override.write_text(f'services:\n  postgres:\n    ports: ["127.0.0.1:{ports["pg"]}:5432"]\n'
                        f"  search:\n    volumes: {mount}\n  worker:\n    volumes: {mount}\n")
    env = {**os.environ, **_images(), "POSTGRES_USER": "imgsearch", "POSTGRES_PASSWORD": "test-secret",
           "DATASET": "tinyimagenet", "SPACE": "cnn", "TRIALS": str(TRIALS), "EPOCHS": "1", "IMAGE_SIZE": "16",
           "MLFLOW_PORT": str(ports["MLFLOW_PORT"]), "DASHBOARD_PORT": str(ports["DASHBOARD_PORT"])}
    project = f"imgsearch-test-{os.getpid()}"
    base = [*compose, "-p", project, "-f", str(REPO / "docker-compose.yml"), "-f", str(override)]

    def run(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        done = subprocess.run([*base, *args], cwd=REPO, env=env, capture_output=True, text=True, **kwargs)
        assert not check or done.returncode == 0, f"{' '.join(args)}: {done.stdout[-3000:]}{done.stderr[-3000:]}"
        return done

    try:
        run("build", timeout=900)
        yield {"run": run, "base": base, "env": env,
               "storage": f"postgresql://imgsearch:test-secret@127.0.0.1:{ports['pg']}/optuna",
               "mlflow": f"http://127.0.0.1:{ports['MLFLOW_PORT']}",
               "dashboard": f"http://127.0.0.1:{ports['DASHBOARD_PORT']}"}
    finally:
        run("down", "-v", "--remove-orphans", check=False, timeout=300)


def _servers_up(stack) -> None:
    stack["run"]("up", "-d", "postgres", "mlflow", "dashboard", timeout=300)
    _wait_for("MLflow", lambda: _get(stack["mlflow"] + "/health") == b"OK")
    _wait_for("the dashboard", lambda: _get(stack["dashboard"] + "/api/studies"))


def _study(stack) -> optuna.Study:
    return optuna.load_study(study_name="tinyimagenet-cnn", storage=stack["storage"])


def _finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials() if t.state.is_finished()]


def test_a_search_and_two_workers_fill_one_study_and_mlflow_and_down_up_keeps_it(stack):
    _servers_up(stack)
    # The search creates the study, runs 2 trials and exports the best; then two workers join the
    # study and add trials until it has TRIALS finished ones.
    search = stack["run"]("run", "--rm", "-e", "TRIALS=2", "search", timeout=900)
    output = search.stdout + search.stderr
    assert "exported model: /runs/" in output and "evaluation:" in output, output[-3000:]
    stack["run"]("up", "-d", "--scale", "worker=2", "worker", timeout=300)

    workers = stack["run"]("ps", "-a", "-q", "worker").stdout.split()
    assert len(workers) == 2
    states = _wait_for("the workers to exit", lambda: _exited(workers), seconds=300)
    assert states == [0, 0], stack["run"]("logs", "--tail", "30", "worker").stdout[-3000:]

    study = _study(stack)
    finished = _finished(study)
    assert len(finished) >= TRIALS and all(t.state.is_finished() for t in study.get_trials())
    hosts = {t.user_attrs[records.WORKER_ATTR].split(":")[0] for t in finished}
    assert len(hosts) >= 2, hosts  # the search's container and the workers' ran trials

    import mlflow

    client = mlflow.MlflowClient(stack["mlflow"])
    experiment = client.get_experiment_by_name(study.study_name)
    runs = client.search_runs([experiment.experiment_id], "tags.`optuna.trial` != ''")
    by_trial = {int(run.data.tags["optuna.trial"]): run for run in runs}
    assert set(by_trial) == {t.number for t in finished}
    for trial in finished:
        run = by_trial[trial.number]
        assert run.info.status == "FINISHED" and run.info.run_name.endswith(trial.state.name.lower())
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.data.metrics["objective"] == pytest.approx(trial.value)
    listed = json.loads(_get(stack["dashboard"] + "/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in listed] == [study.study_name]

    before = {t.number: (t.state, t.value) for t in study.get_trials()}
    stack["run"]("down", timeout=300)  # containers and network gone, volumes kept
    assert stack["run"]("ps", "-a", "-q").stdout.split() == []
    _servers_up(stack)
    after = {t.number: (t.state, t.value) for t in _study(stack).get_trials()}
    assert after == before
    assert {int(r.data.tags["optuna.trial"]) for r in client.search_runs(
        [experiment.experiment_id], "tags.`optuna.trial` != ''")} == set(by_trial)
    listed = json.loads(_get(stack["dashboard"] + "/api/studies"))["study_summaries"]
    assert [s["study_name"] for s in listed] == [study.study_name]


def _exited(containers: list[str]) -> list[int] | None:
    """The exit codes once every container has stopped (None before)."""
    inspected = json.loads(subprocess.run(["docker", "inspect", *containers], capture_output=True,
                                          text=True, check=True).stdout)
    if any(c["State"]["Running"] or c["State"]["Restarting"] for c in inspected):
        return None
    return [c["State"]["ExitCode"] for c in inspected]
