"""The tracking writer classifies, bounds and records (issue 19), with a real ``MlflowClient``.

- An outage (refused connection, 502/503/504) is told from an answer of the store (a persistent
  500, a 400): a stub HTTP server forces each status, as no real server answers them on demand.
- A job the store keeps refusing (a persistent 500 on one endpoint) leaves the head of the queue
  after a bounded number of tries, is journaled with its reason, and the jobs behind it are sent.
- 100,000 jobs queued through an outage grow the process by less than 50 MB (the queue spills to
  the journal past its bound) and every one is done, in order, once the store answers.
- A driver that stops mid-outage leaves an open journal: the unsent notice names ``raysweep sync``.
"""

from __future__ import annotations

import gc
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
from sweep_helpers import free_port

from raysweep.tracking import journal
from raysweep.tracking.store import is_unreachable, make_client
from raysweep.tracking.writer import TrackingWriter

RUN_ID = "0" * 32


class Stub:
    """An HTTP server on 127.0.0.1 answering MLflow's REST paths: `statuses` maps a path suffix
    to the status it always answers; any other path gets 200 ``{}``. `seen` lists (path, body)."""

    def __init__(self, statuses: dict[str, int]) -> None:
        self.statuses, self.seen = statuses, []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.seen.append((self.path, json.loads(body or b"{}")))
                status = next((s for suffix, s in stub.statuses.items() if self.path.endswith(suffix)), 200)
                payload = b"{}" if status == 200 else b'{"error_code": "INTERNAL_ERROR", "message": "forced"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # noqa: N815 - http.server's name

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def count(self, suffix: str) -> int:
        return sum(1 for path, _ in self.seen if path.endswith(suffix))


@pytest.fixture(autouse=True)
def quick_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client retries a 5xx itself (``too many 500 error responses`` after its retries):
    one retry with no back-off keeps that path and keeps the test fast."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")


@pytest.fixture
def stub() -> Iterator[Stub]:
    srv = Stub({"/runs/set-tag": 500, "/runs/delete-tag": 503, "/runs/update": 504, "/runs/log-parameter": 400})
    yield srv
    srv.server.shutdown()


def _error(call: Any) -> BaseException:
    try:
        call()
    except Exception as err:  # noqa: BLE001 - returned for classification
        return err
    raise AssertionError("the call did not fail")


def test_an_outage_is_told_from_an_answer(stub: Stub) -> None:
    client = make_client(stub.url)
    assert not is_unreachable(_error(lambda: client.set_tag(RUN_ID, "k", "v")))  # persistent 500: an answer
    assert not is_unreachable(_error(lambda: client.log_param(RUN_ID, "p", "1")))  # 400
    assert is_unreachable(_error(lambda: client.delete_tag(RUN_ID, "k")))  # 503: a gateway, an outage
    assert is_unreachable(_error(lambda: client.update_run(RUN_ID, status="FINISHED")))  # 504
    dead = make_client(f"http://127.0.0.1:{free_port()}")
    assert is_unreachable(_error(lambda: dead.set_tag(RUN_ID, "k", "v")))  # connection refused


def test_a_persistent_500_does_not_stop_the_other_updates(stub: Stub, tmp_path: Path) -> None:
    client = make_client(stub.url)
    errors: list[int] = []
    writer = TrackingWriter(stub.url, lambda: errors.append(1), journal=journal.Journal(tmp_path / journal.JOURNAL_FILE),
                            max_backoff_s=0.05)
    writer.submit("result", "a", lambda: client.log_metric(RUN_ID, "psnr", 1.0, step=10))
    writer.submit("complete", "a", lambda: client.set_tag(RUN_ID, "raysweep.status", "finished"), record={"kind": "x"})
    for step in (20, 30):
        writer.submit("result", "b", lambda step=step: client.log_metric(RUN_ID, "psnr", 2.0, step=step))
    started = time.monotonic()
    assert writer.drain(30) == []
    assert time.monotonic() - started < 20
    assert stub.count("/runs/log-metric") == 3  # every update behind the refused one was sent
    assert errors == [1]
    state = journal.read_state(str(tmp_path))
    assert state.unsent == 1 and state.refused == 1 and not state.interrupted
    [(reason, count)] = state.reasons.items()
    assert count == 1 and "HTTP 500" in reason
    line = next(json.loads(row) for row in (tmp_path / journal.JOURNAL_FILE).read_text().splitlines()
                if '"unsent"' in row)
    assert line["trial_id"] == "a" and line["what"] == "complete" and line["job"] == {"kind": "x"}
    notice = journal.unsent_notice(str(tmp_path))
    assert notice is not None and "raysweep sync" in notice and "\n" not in notice


class Outage:
    """A store that refuses connections while `down` (a real refused TCP connection), then takes
    every job; `done` lists the jobs' sequence numbers in the order they were done."""

    def __init__(self) -> None:
        self.down, self.done = True, []
        self.url = f"http://127.0.0.1:{free_port()}"

    def deliver(self, record: dict[str, Any]) -> None:
        if self.down:
            requests.get(self.url, timeout=2)  # raises ConnectionError: nothing listens there
        self.done.append(record["seq"])


def _record(seq: int) -> dict[str, Any]:
    """A job record shaped like the callback's: a result of 30 metrics and the trial's view."""
    result = {f"metric_{i}": seq * 1e-3 + i for i in range(30)}
    result.update(step=seq, training_iteration=seq, trial_id=f"t{seq % 64:05d}", done=False)
    view = {"trial_id": f"t{seq % 64:05d}", "name": f"trainable_t{seq % 64:05d}", "local_path": "/tmp/x",
            "config": {"objective.beta": 0.5, "loss.lambda_neural": 0.1, "seed": seq % 4}}
    return {"kind": "result", "seq": seq, "result": result, "timestamp_ms": 1_700_000_000_000 + seq, "view": view}


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


@pytest.mark.slow
def test_100000_jobs_through_an_outage_stay_bounded_and_all_go(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    store = Outage()
    path = tmp_path / journal.JOURNAL_FILE
    writer = TrackingWriter(store.url, lambda: None, journal=journal.Journal(path),
                            rebuild=lambda record: lambda: store.deliver(record), max_backoff_s=0.05)
    jobs = 100_000
    baseline = _rss_mb()
    for seq in range(jobs):
        record = _record(seq)
        writer.submit("result", record["view"]["trial_id"], lambda record=record: store.deliver(record), record)
    grown = _rss_mb() - baseline
    assert writer.in_outage and writer.in_memory <= 2_000 and writer.pending == jobs
    state = journal.read_state(str(tmp_path))
    assert state.interrupted == 1 and state.unsent >= jobs - 2_000  # a driver killed now leaves its notice
    store.down = False
    started = time.monotonic()
    assert writer.drain(600) == []
    replay_s = time.monotonic() - started
    assert store.done == list(range(jobs))  # every job once, in order
    assert not journal.read_state(str(tmp_path)).behind  # caught up: nothing left unsent
    with capsys.disabled():
        print(f"\n{jobs} jobs through an outage: RSS +{grown:.1f} MB, journal {path.stat().st_size / 2**20:.0f} MB, "
              f"replayed in {replay_s:.1f} s")
    assert grown < 50


def test_report_and_claims_find_the_journal_from_the_parent_run(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """``report`` and ``claims`` take an experiment: the sweep directory is the parent run's
    ``raysweep.storage`` tag, and its journal's unsent updates give one line naming ``raysweep sync``."""
    from raysweep.cli import main
    from raysweep.tracking.store import ROLE_SWEEP, ROLE_TAG, STORAGE_TAG, get_or_create_experiment

    sweep_dir = tmp_path / "runs" / "s"
    sweep_dir.mkdir(parents=True)
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    client = make_client(uri)
    client.create_run(get_or_create_experiment(client, "s"), tags={ROLE_TAG: ROLE_SWEEP, STORAGE_TAG: str(sweep_dir)})
    assert journal.experiment_notices(uri, "s") == []
    journal.Journal(sweep_dir / journal.JOURNAL_FILE).append("unsent", what="result", trial_id="t", reason="HTTP 500")
    [notice] = journal.experiment_notices(uri, "s")
    assert f"unsent jobs: run `raysweep sync {sweep_dir}`" in notice and "1 tracking updates" in notice
    main(["claims", "--experiment", "s", "--tracking-uri", uri])
    assert [line for line in capsys.readouterr().err.splitlines() if "unsent jobs" in line] == [notice]
