"""``raysweep ui``: the MLflow UI on a sweep's tracking store, bound to 127.0.0.1.

For the embedded SQLite store (``<storage>/mlflow.db``) it starts ``mlflow server`` on that
database, with the same artifact root the tracking callback uses. MLflow 3's server also starts a
background job runner (for GenAI evaluation jobs: several extra processes) that browsing runs does
not need; it is switched off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set. An ``http://``
tracking URI already is a UI: its address is printed and nothing is started.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.tracking.store import default_artifact_root, resolve_tracking_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 5000


def server_command(uri: str, port: int) -> list[str]:
    """The ``mlflow server`` command line serving `uri` on 127.0.0.1:`port`."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", HOST,
           "--port", str(port), "--workers", "1"]
    root = default_artifact_root(uri)
    if root is not None:
        cmd += ["--default-artifact-root", root]
    return cmd


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def run_ui(tracking_uri: str | None, storage: Path | None, port: int = DEFAULT_PORT) -> int:
    """Serve the MLflow UI until interrupted; returns the server's exit status.

    Raises:
        RaysweepError: no store given, a missing SQLite file, or a port already in use.
    """
    uri = resolve_tracking_uri(tracking_uri, storage)
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is an MLflow tracking server: open it in a browser (nothing to start)")
        return 0
    if not 0 < port < 65536 or not _port_free(port):
        raise RaysweepError(f"--port {port}: not available on {HOST}; choose another with --port")
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # MLflow 3 opens in its GenAI view; the workflowType parameter selects the runs table.
    print(f"MLflow UI for {uri}\n  open http://{HOST}:{port}/#/experiments?workflowType=machine_learning"
          "  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    proc = subprocess.Popen(server_command(uri, port), env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        # The terminal sent SIGINT to the server too; give it a moment to shut down cleanly.
        try:
            return proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.terminate()
            return proc.wait()
