"""``python -m imgsearch dashboard|mlflow``: the Optuna dashboard and the MLflow UI on the stores a
search uses (``make dashboard``, ``make mlflow``, the compose services).

The database URLs come from the environment (STORAGE, MLFLOW_TRACKING_URI, RUNS_DIR) and go
on through it, never through a command line, which ``ps`` and make's echo show to anyone:
they may hold a password. HOST, DASHBOARD_PORT and MLFLOW_PORT say where to listen. ``make
mlflow`` prints the link to each study's runs once the server answers.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from imgsearch.records import OBJECTIVE_METRIC
from imgsearch.settings import Settings
from imgsearch.storage.errors import UserError
from imgsearch.storage.layout import RunsLayout
from imgsearch.storage.mlflow_store import local_tracking_uri
from imgsearch.storage.optuna_storage import open_storage
from imgsearch.storage.urls import default_storage_url, mask_url


def _layout(args: Settings) -> RunsLayout:
    layout = RunsLayout(Path(args.runs_dir))
    layout.ensure_writable()
    return layout


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine alone (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it resolves to whatever the network says


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def check_port_free(host: str, port: int, setting: str) -> None:
    """UserError when something already listens on ``host``:``port`` (a server left running):
    its links would be printed as ours. A port another server just closed (TIME_WAIT) is free."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port} ({exc.strerror}): another server has it? "
                            f"stop it, or set {setting} to a free port") from None


def read_only(app):
    """A WSGI app that answers 403 to every request that would change something (anything but
    GET, HEAD and OPTIONS): the dashboard served to the network cannot delete a study."""
    def guarded(environ, start_response):
        if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD", "OPTIONS"):
            return app(environ, start_response)
        start_response("403 Forbidden", [("Content-Type", "text/plain")])
        return [b"read-only: this dashboard is served to the network (HOST); open it on 127.0.0.1 to change things\n"]
    return guarded


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # one line per request would drown the search's output
        pass


def dashboard(args: Settings) -> int:
    """optuna-dashboard on STORAGE (default the study database in RUNS_DIR), with the trials'
    artifacts (RUNS_DIR/optuna-artifacts), until stopped.

    On an address other than this machine's own (HOST=0.0.0.0, say) it is served read-only,
    with a warning: optuna-dashboard has no authentication, and its API deletes studies.
    """
    from optuna.artifacts import FileSystemArtifactStore
    from optuna_dashboard import wsgi

    layout = _layout(args)
    url = args.storage or default_storage_url(layout.study_db)
    host, port = args.host, args.dashboard_port
    check_port_free(host, port, "DASHBOARD_PORT")
    storage = open_storage(url)
    layout.optuna_artifacts.mkdir(exist_ok=True)
    app = wsgi(storage, artifact_store=FileSystemArtifactStore(layout.optuna_artifacts))
    if not is_loopback(host):
        app = read_only(app)
        print(f"warning: HOST={host} serves the dashboard to the network, read-only (no notes, no deleting): "
              "it has no login; open it on 127.0.0.1 (an SSH tunnel, say) to change things", file=sys.stderr)

    class Server(ThreadingMixIn, WSGIServer):
        address_family = _family(host)
        daemon_threads = True

    server = make_server(host, port, app, server_class=Server, handler_class=_Quiet)
    print(f"optuna-dashboard on {mask_url(url)}: http://{host}:{port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


def allowed_hosts(host: str) -> str | None:
    """MLflow's ``--allowed-hosts`` for a server on ``host``: None (MLflow's default, this
    machine's names) on a loopback address, every name on all addresses, else ``host`` and
    this machine's names. Without it MLflow answers 403 to every other machine."""
    if is_loopback(host):
        return None
    if host in ("0.0.0.0", "::", "[::]"):
        return "*"
    return ",".join(f"{name},{name}:*" for name in (host, "localhost", "127.0.0.1"))


def mlflow(args: Settings) -> int:
    """MLflow's server (UI + REST API) on MLFLOW_TRACKING_URI (default the store in RUNS_DIR);
    once it answers, the link to each study's runs. Returns the server's exit status.

    One web worker and no GenAI job runners (MLflow's defaults are 4 workers and job
    consumers: 16 processes, about 1.8 GB and 20-50 s to answer on 2 cores) are plenty for
    looking at one's own studies.
    """
    url = args.mlflow_tracking_uri or local_tracking_uri(_layout(args))
    if url.startswith(("http://", "https://")):
        print(f"the tracking server {mask_url(url)} is the MLflow UI: open it", flush=True)
        return 0
    host, port = args.host, str(args.mlflow_port)
    check_port_free(host, args.mlflow_port, "MLFLOW_PORT")
    base = f"http://{host}:{port}"
    hosts = allowed_hosts(host)
    if hosts:
        print(f"warning: HOST={host} serves the MLflow UI to the network, where anyone who reaches it can change "
              "and delete runs (MLflow has no read-only mode): keep it on a trusted network", file=sys.stderr)
    print(f"MLflow UI on {mask_url(url)}: {base}", flush=True)
    executable = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    server = subprocess.Popen([executable, "server", "--host", host, "--port", port, "--workers", "1",
                               *(["--allowed-hosts", hosts] if hosts else [])],
                              env={**os.environ, "MLFLOW_BACKEND_STORE_URI": url,
                                   "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server is stopped below
    try:
        local = base.replace("//0.0.0.0:", "//127.0.0.1:").replace("//[::]:", "//[::1]:")
        if _answers(local, server):
            for what, link in runs_links(local):
                print(f"  {what}: {link}", flush=True)
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
    links = []
    for e in experiments:
        if e["experiment_id"] == "0":
            continue
        links.append((f"runs of {e['name']}", f"{base}/#/experiments/{e['experiment_id']}/runs?{view}"))
        parent = _study_run(base, e["experiment_id"], e["name"])
        if parent:
            links.append((f"the study run of {e['name']} (test scores, confusion matrix)",
                          f"{base}/#/experiments/{e['experiment_id']}/runs/{parent}"))
    return links


def _study_run(base: str, experiment_id: str, name: str) -> str | None:
    """The id of the study's parent run (named after the study), None if there is none."""
    request = urllib.request.Request(f"{base}/api/2.0/mlflow/runs/search",
                                     data=json.dumps({"experiment_ids": [experiment_id], "max_results": 1,
                                                      "filter": f"attributes.run_name = '{name}'"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.load(response).get("runs", [])
    return runs[0]["info"]["run_id"] if runs else None
