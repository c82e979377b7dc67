"""``python -m search.dashboards dashboard|mlflow``: the Optuna dashboard and the MLflow UI on
the stores a search uses (``make dashboard``, ``make mlflow``, the compose services).

The database URLs come from the environment (STORAGE, MLFLOW_TRACKING_URI, RUNS_DIR) and go
on through it, never through a command line, which ``ps`` and make's echo show to anyone:
they may hold a password. HOST (default 127.0.0.1), DASHBOARD_PORT and MLFLOW_PORT say
where to listen.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from search.errors import UserError
from search.tracking import default_tracking_uri
from storage import RunsLayout, default_storage_url, mask_url, open_storage


def dashboard(host: str, layout: RunsLayout) -> None:
    """optuna-dashboard on STORAGE (default the study database in RUNS_DIR)."""
    from optuna_dashboard import run_server

    url = os.environ.get("STORAGE") or default_storage_url(layout.study_db)
    port = int(os.environ.get("DASHBOARD_PORT") or 8080)
    storage = open_storage(url)
    print(f"optuna-dashboard on {mask_url(url)}: http://{host}:{port}", flush=True)
    run_server(storage, host=host, port=port)


def mlflow_ui(host: str, layout: RunsLayout) -> None:
    """MLflow's server (UI + REST API) on MLFLOW_TRACKING_URI (default the store in RUNS_DIR)."""
    url = os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(layout.mlflow_db)
    if url.startswith(("http://", "https://")):
        print(f"the tracking server {url} is the MLflow UI: open it", flush=True)
        return
    port = os.environ.get("MLFLOW_PORT") or "5000"
    print(f"MLflow UI on {mask_url(url)}: http://{host}:{port}", flush=True)
    mlflow = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    os.execve(mlflow, [mlflow, "server", "--host", host, "--port", port],
              {**os.environ, "MLFLOW_BACKEND_STORE_URI": url})


def main(argv: list[str]) -> int:
    host = os.environ.get("HOST") or "127.0.0.1"
    layout = RunsLayout(Path(os.environ.get("RUNS_DIR") or "runs"))
    try:
        if argv not in (["dashboard"], ["mlflow"]):
            raise UserError("usage: python -m search.dashboards dashboard|mlflow")
        layout.ensure_writable()
        (dashboard if argv == ["dashboard"] else mlflow_ui)(host, layout)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
