"""``python -m search.dashboards dashboard|mlflow``: the Optuna dashboard and the MLflow UI on
the stores a search uses (``make dashboard``, ``make mlflow``, the compose services).

The database URLs come from the environment (STORAGE, MLFLOW_TRACKING_URI, RUNS_DIR) and go
on through it, never through a command line, which ``ps`` and make's echo show to anyone:
they may hold a password. HOST (default 127.0.0.1), DASHBOARD_PORT and MLFLOW_PORT say
where to listen. ``make mlflow`` prints the link to each study's runs once the server answers.
"""

from __future__ import annotations

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

from storage.errors import UserError
from search.records import OBJECTIVE_METRIC
from storage.layout import RunsLayout
from storage.mlflow_store import local_tracking_uri
from storage.optuna_storage import open_storage
from storage.urls import default_storage_url, mask_url


def dashboard(host: str, layout: RunsLayout) -> None:
    """optuna-dashboard on STORAGE (default the study database in RUNS_DIR)."""
    from optuna_dashboard import run_server

    url = os.environ.get("STORAGE") or default_storage_url(layout.study_db)
    port = int(os.environ.get("DASHBOARD_PORT") or 8080)
    storage = open_storage(url)
    print(f"optuna-dashboard on {mask_url(url)}: http://{host}:{port}", flush=True)
    run_server(storage, host=host, port=port)


def mlflow_ui(host: str, layout: RunsLayout) -> int:
    """MLflow's server (UI + REST API) on MLFLOW_TRACKING_URI (default the store in RUNS_DIR);
    once it answers, the link to each study's runs. Returns the server's exit status.

    One web worker and no GenAI job runners (MLflow's defaults are 4 workers and job
    consumers: 16 processes, about 1.8 GB and 20-50 s to answer on 2 cores) are plenty for
    looking at one's own studies.
    """
    url = os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(layout)
    if url.startswith(("http://", "https://")):
        print(f"the tracking server {url} is the MLflow UI: open it", flush=True)
        return 0
    port = os.environ.get("MLFLOW_PORT") or "5000"
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


def main(argv: list[str]) -> int:
    host = os.environ.get("HOST") or "127.0.0.1"
    layout = RunsLayout(Path(os.environ.get("RUNS_DIR") or "runs"))
    try:
        if argv not in (["dashboard"], ["mlflow"]):
            raise UserError("usage: python -m search.dashboards dashboard|mlflow")
        layout.ensure_writable()
        if argv == ["dashboard"]:
            dashboard(host, layout)
        else:
            return mlflow_ui(host, layout)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
