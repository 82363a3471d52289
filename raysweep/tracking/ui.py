"""``raysweep ui``: the MLflow UI on a sweep's tracking store, bound to 127.0.0.1 by default.

``--host ADDR`` binds another address (``0.0.0.0``: every interface, to look at a cluster head's
UI without an SSH tunnel). The MLflow UI has no authentication, so anyone who reaches that address
can read and change the runs: a one-line warning says so on stderr. Loopback (``127.0.0.1``,
``::1``, ``localhost``) is quiet; from a laptop, ``ssh -L 5000:127.0.0.1:5000 head`` reaches it.

For the embedded SQLite store (``<storage>/mlflow.db``) it starts ``mlflow server`` on that
database, with the same artifact root the tracking callback uses. MLflow 3's server also starts a
background job runner (for GenAI evaluation jobs: several extra processes) that browsing runs does
not need; it is switched off unless ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION`` is set. An ``http://``
tracking URI already is a UI: its address is printed and nothing is started.

``mlflow server`` is a tree of processes (the server, its uvicorn worker, MLflow's helpers), so it
is started in a process group of its own and stopped as a group, however ``raysweep ui`` ends:
Ctrl-C (SIGINT), SIGTERM from ``kill`` or a process manager (the CLI turns it into a normal exit),
or the server failing. Stopping only the direct child left uvicorn running with the port held.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from raysweep.errors import RaysweepError
from raysweep.tracking.store import default_artifact_root, resolve_tracking_uri

HOST = "127.0.0.1"
DEFAULT_PORT = 5000
#: Seconds the server's processes get to exit after SIGTERM before they are killed.
STOP_TIMEOUT_S = 10.0


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only."""
    import ipaddress

    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, port: int) -> str | None:
    """The one-line warning for a UI bound to a non-loopback `host`; None for loopback."""
    if is_loopback(host):
        return None
    return (f"raysweep ui: warning: --host {host} serves the MLflow UI on port {port} to the network without "
            "authentication (anyone reaching it can read and delete runs); prefer the default 127.0.0.1 and "
            "`ssh -L` from your laptop")


def server_command(uri: str, port: int, host: str = HOST) -> list[str]:
    """The ``mlflow server`` command line serving `uri` on `host`:`port`."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    root = default_artifact_root(uri)
    if root is not None:
        cmd += ["--default-artifact-root", root]
    return cmd


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on `host`:`port` now.

    The probe binds as servers do, with ``SO_REUSEADDR`` (uvicorn sets it), so a port whose last
    connections are in TIME_WAIT counts as free: after a server closes its connections first, a plain
    ``bind`` is refused for a minute although nothing listens, which refused a ``raysweep ui``
    restarted on the same port.

    Raises:
        RaysweepError: `host` is no address of this machine (nothing could listen there at all).
    """
    try:
        family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as err:
        raise RaysweepError(f"--host {host}: not an address or host name ({err}): give an address of this machine, "
                            "e.g. 127.0.0.1 (default) or 0.0.0.0") from None
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(1)
        except OSError as err:
            if err.errno == errno.EADDRNOTAVAIL:
                raise RaysweepError(f"--host {host}: this machine has no such address: give one of its addresses, "
                                    "e.g. 127.0.0.1 (default) or 0.0.0.0") from None
            return False
    return True


def run_ui(tracking_uri: str | None, storage: Path | None, port: int = DEFAULT_PORT, host: str = HOST) -> int:
    """Serve the MLflow UI on `host`:`port` until interrupted; returns the server's exit status.

    Raises:
        RaysweepError: no store given, a missing SQLite file, an address this machine does not
            have, or a port already in use.
    """
    uri = resolve_tracking_uri(tracking_uri, storage)
    if uri.startswith(("http://", "https://")):
        print(f"{uri} is an MLflow tracking server: open it in a browser (nothing to start)")
        return 0
    if not 0 < port < 65536 or not port_free(port, host):
        raise RaysweepError(f"--port {port}: not available on {host}; choose another with --port")
    warning = exposure_warning(host, port)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    env = dict(os.environ)
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    # MLflow 3 opens in its GenAI view; the workflowType parameter selects the runs table.
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "localhost") else host
    shown = f"[{shown}]" if ":" in shown else shown
    print(f"MLflow UI for {uri}\n  open http://{shown}:{port}/#/experiments?workflowType=machine_learning"
          "  (Ctrl-C to stop)", file=sys.stderr, flush=True)
    proc = subprocess.Popen(server_command(uri, port, host), env=env, start_new_session=True)
    try:
        return proc.wait()
    finally:
        # Ctrl-C (KeyboardInterrupt), SIGTERM (SystemExit from the CLI) or a server that exited:
        # nothing of the server's group outlives the command.
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop `proc` and every process of its group (it leads one: ``start_new_session``): SIGTERM,
    then SIGKILL for what is left after `timeout` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # nothing of the group is left
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                proc.wait(timeout=0.1)  # reap the leader: a zombie still counts as a group member
            except subprocess.TimeoutExpired:
                pass
            if not _group_alive(proc.pid):
                return


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
