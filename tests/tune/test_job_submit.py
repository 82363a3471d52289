"""`ray start --head` + `ray job submit -- raysweep sweep ... --address auto`, as on a cluster.

The head runs with ``--block`` in its own session and is stopped by signalling that session, so the
test stops exactly the Ray processes it started (``ray stop`` would stop every Ray on the machine).
Token authentication is on, with a token file private to the test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
QUICK = [  # the quickstart reduced to 2 tiny trials
    "--set", "search.cells=[{loss.neural: none, loss.lambda_neural: 0.0}, {loss.neural: box_blur, loss.lambda_neural: 0.5}]",
    "--set", "search.grid.objective.beta=[1.0]", "--set", "search.seeds=[0]", "--set", "train.max_steps=20",
    "--set", "train.val_every=10",
    "--set", "data.image_size=16", "--set", "data.val_size=64", "--set", "data.xysquares.square_size=4", "--set", "data.xysquares.grid_spacing=4",
    "--set", "objective.kl_warmup_steps=0",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_dashboard(url: str, head: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"`ray start --head` exited with status {head.returncode}")
        try:
            urllib.request.urlopen(f"{url}/api/version", timeout=2)
            return
        except urllib.error.HTTPError:  # answering (401 without the token): it is up
            return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"the Ray dashboard did not answer at {url} within {timeout:.0f} s")


def _stop_session(head: subprocess.Popen) -> None:
    """SIGTERM every process of the head's session (the Ray processes it started), then SIGKILL
    what is left after a grace period."""
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)  # reap the leader, so the group below is only what it left behind
    except subprocess.TimeoutExpired:
        pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(head.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    try:
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    head.wait(timeout=30)


def _job_api_installed() -> None:
    """`ray job submit` needs the dashboard's job API, which comes with ray[default]."""
    try:
        import aiohttp_cors  # noqa: F401
        import grpc  # noqa: F401
    except ImportError as err:
        pytest.fail(f"`ray job submit` needs ray[default] ({err}): install ray[default,tune]==2.60.0")


@pytest.fixture
def ray_head(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A Ray head on free ports (dashboard URL, environment with its token), stopped afterwards."""
    _job_api_installed()
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    temp_dir = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    dashboard = _free_port()
    command = [
        str(BIN / "ray"), "start", "--head", "--block", "--num-cpus", "2", "--port", str(_free_port()),
        "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard), "--include-dashboard", "true",
        "--ray-client-server-port", str(_free_port()), "--dashboard-agent-listen-port", str(_free_port()),
        "--temp-dir", temp_dir, "--disable-usage-stats",
    ]
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{dashboard}"
    try:
        _wait_for_dashboard(url, head, timeout=240)
        yield url, env
    finally:
        _stop_session(head)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_ray_job_submit_runs_the_quickstart(ray_head: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, env = ray_head
    storage = tmp_path / "sweeps"
    submit = [
        str(BIN / "ray"), "job", "submit", "--address", url, "--working-dir", str(REPO),
        "--runtime-env", str(REPO / "cluster" / "runtime_env.yaml"), "--",
        "raysweep", "sweep", "search_spaces/quickstart.yaml", "--address", "auto", "--storage", str(storage), *QUICK,
    ]
    done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=480)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output
    assert "2 trials: 2 finished" in output
    sweep_dir = storage / "quickstart"
    finals = [json.loads(p.read_text()) for p in sweep_dir.glob("*/train/final.json")]
    assert len(finals) == 2 and all(f["status"] == "finished" and f["step"] == 20 for f in finals)
