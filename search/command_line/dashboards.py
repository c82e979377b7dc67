"""``python -m search dashboard|mlflow``: the Optuna dashboard and the MLflow UI on the stores a
search uses (``make dashboard``, ``make mlflow``, the compose services).

The database URLs come from the environment (STORAGE, MLFLOW_TRACKING_URI, RUNS_DIR) and go
on through it, never through a command line, which ``ps`` and make's echo show to anyone:
they may hold a password. HOST, DASHBOARD_PORT and MLFLOW_PORT say where to listen. ``make
mlflow`` prints the link to each study's runs once the server answers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from search.records import OBJECTIVE_METRIC
from storage.layout import RunsLayout
from storage.mlflow_store import local_tracking_uri
from storage.optuna_storage import open_storage
from storage.urls import default_storage_url, mask_url


def _layout(args: argparse.Namespace) -> RunsLayout:
    layout = RunsLayout(Path(args.runs_dir))
    layout.ensure_writable()
    return layout


def dashboard(args: argparse.Namespace) -> int:
    """optuna-dashboard on STORAGE (default the study database in RUNS_DIR), until stopped."""
    from optuna_dashboard import run_server

    url = args.storage or default_storage_url(_layout(args).study_db)
    host, port = args.host, args.dashboard_port
    storage = open_storage(url)
    print(f"optuna-dashboard on {mask_url(url)}: http://{host}:{port}", flush=True)
    run_server(storage, host=host, port=port)
    return 0


def mlflow(args: argparse.Namespace) -> int:
    """MLflow's server (UI + REST API) on MLFLOW_TRACKING_URI (default the store in RUNS_DIR);
    once it answers, the link to each study's runs. Returns the server's exit status.

    One web worker and no GenAI job runners (MLflow's defaults are 4 workers and job
    consumers: 16 processes, about 1.8 GB and 20-50 s to answer on 2 cores) are plenty for
    looking at one's own studies.
    """
    url = args.mlflow_tracking_uri or local_tracking_uri(_layout(args))
    if url.startswith(("http://", "https://")):
        print(f"the tracking server {url} is the MLflow UI: open it", flush=True)
        return 0
    host, port = args.host, str(args.mlflow_port)
    base = f"http://{host}:{port}"
    print(f"MLflow UI on {mask_url(url)}: {base}", flush=True)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([mlflow, "server", "--host", host, "--port", port, "--workers", "1"],
                              env={**os.environ, "MLFLOW_BACKEND_STORE_URI": url,
                                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped below
    try:
        local = base.replace("//0.0.0.0:", "//127.0.0.1:")
        if _answers(local, server):
            for name, link in runs_links(local):
                print(f"  runs of {name}: {link}", flush=True)
        return server.wait()
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()


def _answers(base: str, server: subprocess.Popen, seconds: float = 300) -> bool:
    """Wait until the server at ``base`` answers its health check (False if it exits first)."""
    deadline = time.monotonic() + seconds
    while server.poll() is None and time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/health", timeout=2).close()
            return True
        except OSError:
            time.sleep(0.2)
    return False


def runs_links(base: str) -> list[tuple[str, str]]:
    """(experiment name, link to its trial runs) for each experiment but MLflow's empty Default.

    The link opens the runs table (``workflowType=machine_learning``, not MLflow 3's GenAI
    overview) on the trial runs, sorted by their ``objective`` metric as the study ranks them.
    """
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 1000}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        experiments = json.load(response).get("experiments", [])
    view = urllib.parse.urlencode({"workflowType": "machine_learning",
                                   "searchFilter": "attributes.run_name LIKE 'trial-%'",
                                   "orderByKey": f"metrics.`{OBJECTIVE_METRIC}`", "orderByAsc": "false"},
                                  quote_via=urllib.parse.quote)
    return [(e["name"], f"{base}/#/experiments/{e['experiment_id']}/runs?{view}")
            for e in experiments if e["experiment_id"] != "0"]
