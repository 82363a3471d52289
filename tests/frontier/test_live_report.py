"""The report a running sweep rewrites (raysweep.frontier.live_report): real `raysweep report` renders in their
own process over a real MLflow store, at most one per `every_s` as trials end, published page last, with the
in-progress banner while the sweep runs (also seen in headless Chromium), and a last render without it, logged
to the sweep's parent run."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chromium_cdp import inspect_page, require_chromium
from synthetic_store import log_sweep

from raysweep.frontier.live_report import STAGING, LiveReport, publish
from raysweep.tracking.store import ROLE_SWEEP, ROLE_TAG, make_client, search_all


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_publish_moves_the_page_last_and_drops_stale_figures(tmp_path: Path) -> None:
    out, staging = tmp_path / "report", tmp_path / "report" / STAGING
    (out / "plots").mkdir(parents=True)
    (out / "plots" / "old.png").write_bytes(b"old")
    (out / "index.html").write_text("old page")
    (staging / "plots").mkdir(parents=True)
    (staging / "plots" / "new.png").write_bytes(b"new")
    (staging / "index.html").write_text("new page")
    publish(staging, out)
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["new.png"]
    assert (out / "index.html").read_text() == "new page" and not staging.exists()


def _runs(n: int) -> list[dict]:
    return [{"loss": "none", "lambda_neural": 0.0, "beta": b, "seed": s, "rate": 10.0 / b + s, "mse": 0.01 * b,
             "distortion_sse": 30.0 * b, "anisotropy": 0.1} for b in (0.5, 1.0, 2.0) for s in range(n)]


def _wait(report: LiveReport) -> None:
    deadline = time.monotonic() + 180
    while report.process is not None and time.monotonic() < deadline:
        time.sleep(0.2)
        report.on_step_end(0, [])


@pytest.mark.slow
def test_a_running_sweep_rewrites_its_report_at_most_once_per_period(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_sweep(uri, "live", "live", _runs(2))
    clock, out = _Clock(), tmp_path / "sweep" / "report"
    report = LiveReport("live", uri, out, every_s=60, total=12, clock=clock)
    report.on_step_end(0, [])
    assert report.process is None  # no trial has ended: nothing to draw
    report.on_trial_complete(0, [], None)
    report.on_step_end(0, [])
    first = report.process
    assert first is not None
    _wait(report)
    page = (out / "index.html").read_text()
    assert "in progress: 6 of 12 trials finished" in page and 'http-equiv="refresh"' in page
    assert report.renders == 1 and not (out / STAGING).exists()

    shot = tmp_path / "banner.png"
    seen = inspect_page(require_chromium(), (out / "index.html").resolve().as_uri(), tmp_path / "profile",
                        screenshot=shot)
    assert seen.banner is not None and seen.banner["height"] > 0 and seen.errors == []
    assert seen.banner["text"].startswith("in progress: 6 of 12 trials finished")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    log_sweep(uri, "live", "live-more", _runs(2))  # more trials end within the period: no new render yet
    report.on_trial_complete(0, [], None)
    clock.now = 59.0
    report.on_step_end(0, [])
    assert report.process is None and report.due
    clock.now = 61.0
    report.on_step_end(0, [])
    assert report.process is not None
    _wait(report)
    assert "in progress: 12 of 12 trials finished" in (out / "index.html").read_text()

    report.on_experiment_end([])  # the last render: the final report, no banner, logged to MLflow
    final = (out / "index.html").read_text()
    assert "in progress" not in final and "refresh" not in final and "<h2>Claims" in final
    client = make_client(uri)
    experiment_id = client.get_experiment_by_name("live").experiment_id
    for parent in search_all(client, [experiment_id], f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}'"):
        assert "report" in {a.path for a in client.list_artifacts(parent.info.run_id)}
