"""``raysweep ui``: a real MLflow UI process on the embedded SQLite store, bound to 127.0.0.1."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from sweep_helpers import REPO, free_port, stop_process_group, wait_for_health

from raysweep.cli import main
from raysweep.errors import RaysweepError
from raysweep.tracking.store import get_or_create_experiment, make_client, tracking_uri_for
from raysweep.tracking.ui import run_ui


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
    port = free_port()
    log = open(tmp_path / "ui.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "raysweep.cli", "ui", "--storage", str(tmp_path), "--port", str(port)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base, proc=proc)
        found = json.loads(_get(f"{base}/api/2.0/mlflow/experiments/get-by-name?experiment_name=ui-test"))
        assert found["experiment"]["name"] == "ui-test"
        query = urllib.parse.urlencode({"path": "final.json", "run_uuid": run_id})
        assert json.loads(_get(f"{base}/get-artifact?{query}"))["rate"] == 3.2
        assert b"<html" in _get(f"{base}/").lower()
    finally:
        stop_process_group(proc)
        log.close()
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


def test_ui_with_a_tracking_server_starts_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ui", "--tracking-uri", "http://127.0.0.1:5999"]) == 0
    assert "is an MLflow tracking server" in capsys.readouterr().out
