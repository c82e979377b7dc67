"""docker-compose.yml and Dockerfile, checked without a Docker engine (test_compose_stack.py starts the stack)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

from conftest import REPO
from imgsearch.settings import BY_NAME, COMMANDS

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_the_services_are_there_and_their_commands_exist():
    assert set(SERVICES) == {"postgres", "mlflow", "dashboard", "search", "worker"}
    # The official images unless POSTGRES_IMAGE / PYTHON_IMAGE name others (docker/local/images.sh)
    assert SERVICES["postgres"]["image"] == "${POSTGRES_IMAGE:-postgres:16}"
    python_image = SERVICES["worker"]["build"]["args"]["PYTHON_IMAGE"]
    assert python_image == "${PYTHON_IMAGE:-python:3.11-slim}"
    assert "ARG PYTHON_IMAGE=python:3.11-slim\nFROM ${PYTHON_IMAGE}" in (REPO / "Dockerfile").read_text()
    assert "pg_isready" in " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "pgdata:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    for name in ("search", "worker"):
        command = SERVICES[name]["command"]
        assert command[:3] == ["python", "-m", "imgsearch"] and command[3] in COMMANDS
        assert SERVICES[name]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    assert (Path(sys.executable).parent / SERVICES["mlflow"]["command"][0]).is_file()  # the image's .venv has it
    assert SERVICES["dashboard"]["command"] == ["python", "-m", "imgsearch", "dashboard"]


def test_every_variable_the_project_containers_set_is_one_the_code_reads():
    for name in ("search", "worker", "dashboard"):  # each a setting that command reads
        assert all(name in BY_NAME[env.lower()].commands for env in SERVICES[name]["environment"]), name
    env = SERVICES["worker"]["environment"]
    assert env["STORAGE"].startswith("postgresql://") and env["STORAGE"].endswith("@postgres:5432/optuna")
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    # mlflow server reads its backend store from this variable (a click envvar of --backend-store-uri)
    from mlflow.cli import server

    [store_option] = [p for p in server.params if p.name == "backend_store_uri"]
    assert set(SERVICES["mlflow"]["environment"]) == {store_option.envvar, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"}


def test_ports_bind_to_localhost_and_no_credentials_are_in_the_repo():
    for service in SERVICES.values():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), port
    for service in SERVICES.values():  # `docker ps` shows commands: no credentials in them
        assert "PASSWORD" not in " ".join(service.get("command", [])) + str(service.get("healthcheck", ""))
    text = (REPO / "docker-compose.yml").read_text()
    referenced = set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", text))
    example = dict(line.split("=", 1) for line in (REPO / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert referenced <= set(example), referenced - set(example)
    assert "POSTGRES_PASSWORD:" in text and re.search(r"POSTGRES_PASSWORD: \$\{POSTGRES_PASSWORD\}", text)
    assert example["POSTGRES_PASSWORD"] == "change-me"
    assert ".env" in (REPO / ".gitignore").read_text().splitlines()
    databases = set(re.findall(r"CREATE DATABASE (\w+);", (REPO / "docker" / "initdb.sql").read_text()))
    assert databases == set(re.findall(r"@postgres:5432/(\w+)", text))


def test_the_image_installs_the_project_as_the_readme_says():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert "&& make install\n" in dockerfile and "COPY . ." in dockerfile
    # COPY . . must not bring this machine's .venv, results or data over the image's
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    assert {".venv", "runs", "data", ".git", ".env"} <= set(ignored)
    assert "make search DATASET=digits" in (REPO / "README.md").read_text()
