"""``raysweep ui``: a real MLflow UI process on the embedded SQLite store, bound to 127.0.0.1."""

from __future__ import annotations

import json
import socket
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import free_port, ui_server

from raysweep.cli import main
from raysweep.errors import RaysweepError
from raysweep.tracking.store import get_or_create_experiment, make_client, tracking_uri_for
from raysweep.tracking.ui import port_free, run_ui


def _store_with_one_run(storage: Path) -> tuple[str, str]:
    """An embedded store holding experiment "ui-test" with one run that has a final.json artifact."""
    client = make_client(tracking_uri_for(storage, None))
    experiment_id = get_or_create_experiment(client, "ui-test")
    run = client.create_run(experiment_id, run_name="trial_0")
    final = storage / "final.json"
    final.write_text(json.dumps({"status": "finished", "rate": 3.2}))
    client.log_artifact(run.info.run_id, str(final))
    client.log_metric(run.info.run_id, "rate", 3.2, step=10)
    client.set_terminated(run.info.run_id)
    return experiment_id, run.info.run_id


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        assert answer.status == 200
        return answer.read()


def test_ui_serves_the_embedded_store_on_localhost(tmp_path: Path) -> None:
    _, run_id = _store_with_one_run(tmp_path)
    with ui_server(tmp_path, tmp_path / "ui.log") as base:
        found = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test"))
        assert found["experiment"]["name"] == "ui-test"
        query = urllib.parse.urlencode({"path": "final.json", "run_uuid": run_id})
        assert json.loads(_get(f"{base}/get-artifact?{query}"))["rate"] == 3.2
        assert b"<html" in _get(f"{base}/").lower()
    assert "open http://127.0.0.1:" in (tmp_path / "ui.log").read_text()


def test_ui_refuses_a_busy_port_and_a_missing_store(tmp_path: Path) -> None:
    _store_with_one_run(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RaysweepError, match=f"--port {port}: not available"):
            run_ui(None, tmp_path, port=port)
    with pytest.raises(RaysweepError, match="no mlflow.db there"):
        run_ui(None, tmp_path / "elsewhere", port=free_port())


def _time_wait_port() -> int:
    """A port nothing listens on whose server side closed a connection first: the kernel keeps
    that end in TIME_WAIT for a minute, as after an HTTP server answered with ``Connection: close``.
    The server sets ``SO_REUSEADDR``, as uvicorn (``mlflow server``) does: Linux lets a new bind
    reuse a TIME_WAIT port only when both sockets set it."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server's end closes first: it is the one left in TIME_WAIT
        assert client.recv(1) == b""  # the client saw the close
        client.close()
    return port


def test_a_port_in_time_wait_is_free_for_the_ui_but_a_listening_one_is_not() -> None:
    port = _time_wait_port()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old check did: refused, though nothing listens
    assert port_free(port)  # as a server binds (SO_REUSEADDR): a restarted ui gets its port back
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert not port_free(listening.getsockname()[1])


def test_ui_with_a_tracking_server_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:5999"]) == 0
    assert "is an MLflow tracking server" in capsys.readouterr().out
