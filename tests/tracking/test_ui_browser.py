"""Runs a person can read in MLflow: a real tiny sweep of the quickstart's shape, its child runs'
names in the store, after ``raysweep sync`` into a fresh store, the claims as the parent run's
description, and all of it in MLflow's own UI (``raysweep ui``) in headless Chromium.

The sweep is the quickstart's search (cells: SSE alone, SSE + box blur at lambda 0.5; grid: two
betas) on the tiny trial of :mod:`tiny_trial`: 4 trials of 20 steps through raysweep's own sweep
runner, so the names come from the path a user's sweep takes (``build_callbacks``).

MLflow's UI is a React app: the page is polled until the table has rendered. The runs table nests
child runs under their parent (tag ``mlflow.parentRunId``) collapsed, so the test expands the
parent row; the parent run's page renders its description (``mlflow.note.content``) as markdown; a
child run's artifact viewer draws the reconstruction grid logged at its last validation (``log_image``).
The pages are saved as screenshots (``runs_table.png``, ``parent_run.png``, ``child_images.png`` in the module's
temporary folder, printed with ``pytest -s``).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sweep_helpers import REPO, ui_server
from tiny_trial import tiny_trial_tree

from raysweep.cli import main
from raysweep.frontier.claims_table import claims_markdown
from raysweep.frontier.report import DESCRIPTION_TAG, build_report, sweep_claims
from raysweep.tracking.store import PARENT_TAG, ROLE_SWEEP, ROLE_TAG, make_client, tracking_uri_for
from raysweep.tune.backfill import sync_sweep_dir
from raysweep.tune.load import sweep_from_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "frontier"))
from chromium_cdp import _Session, chromium, require_chromium  # noqa: E402

pytestmark = pytest.mark.slow

NAME = "quickstart"
NAMES = {"none λ=0 β=0.01 s0", "none λ=0 β=0.1 s0", "box_blur λ=0.5 β=0.01 s0", "box_blur λ=0.5 β=0.1 s0"}
RENDER_TIMEOUT_S = 90.0


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The ``--storage`` folder of a finished 4-trial sweep of the quickstart's shape."""
    import ray

    from raysweep.tune.run import run_sweep

    folder = tmp_path_factory.mktemp("quickstart_names")
    raw = yaml.safe_load((REPO / "search_spaces" / "quickstart.yaml").read_text())
    raw["trial"] = tiny_trial_tree()
    raw["search"]["cells"] = raw["search"]["cells"][:2]
    raw["search"].pop("seeds", None)  # one seed: 4 trials are enough to read names by
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_sweep(sweep_from_dict(raw), storage=str(folder), verbose=0)
    finally:
        ray.shutdown()
    assert outcome.num_errors == 0 and len(outcome.rows) == 4
    yield folder


def _runs(uri: str) -> tuple[str, Any, list[Any]]:
    """(experiment id, parent run, child runs) of the sweep in the store at `uri`."""
    client = make_client(uri)
    experiment = client.get_experiment_by_name(NAME)
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(ROLE_TAG) == ROLE_SWEEP]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parents[0].info.run_id]
    return experiment.experiment_id, parents[0], children


@pytest.fixture(scope="module")
def described(storage: Path) -> str:
    """`raysweep claims` run once on the sweep's experiment; returns the tracking URI."""
    assert main(["claims", "--experiment", NAME, "--storage", str(storage)]) == 0
    return tracking_uri_for(storage, None)


def test_child_runs_are_named_by_what_varies_and_sync_names_them_alike(storage: Path, tmp_path: Path) -> None:
    _, parent, children = _runs(tracking_uri_for(storage, None))
    assert parent.info.run_name == NAME
    assert sorted(r.info.run_name for r in children) == sorted(NAMES)
    by_trial = {r.data.tags["raysweep.trial_id"]: r.info.run_name for r in children}
    # A store that never saw the sweep: sync creates every run, with the name the callback gave it.
    fresh = f"sqlite:///{tmp_path / 'fresh.db'}"
    report = sync_sweep_dir(str(storage / NAME), tracking_uri=fresh)
    assert report.runs_created == 5
    _, _, synced = _runs(fresh)
    assert {r.data.tags["raysweep.trial_id"]: r.info.run_name for r in synced} == by_trial
    # And the sweep's own store is complete: nothing to write, no name changed.
    assert not sync_sweep_dir(str(storage / NAME)).changed
    assert sorted(r.info.run_name for r in _runs(tracking_uri_for(storage, None))[2]) == sorted(NAMES)


def test_claims_and_report_write_the_claims_table_as_the_parent_description(storage: Path, described: str,
                                                                             tmp_path: Path) -> None:
    rows = sweep_claims(NAME, described)
    expected = claims_markdown(rows)
    assert expected.startswith("### Claims") and "rate vs lambda" in expected
    _, parent, _ = _runs(described)
    assert parent.data.tags[DESCRIPTION_TAG] == expected  # written by `raysweep claims`
    client = make_client(described)
    client.delete_tag(parent.info.run_id, DESCRIPTION_TAG)
    build_report(NAME, described, tmp_path / "report")
    _, parent, _ = _runs(described)
    assert parent.data.tags[DESCRIPTION_TAG] == expected  # ... and by `raysweep report`


# ------------------------------------------------------------------------------------ the browser
_EXPAND_PARENT = ("(() => { const b = document.querySelector('button[data-component-id*=\"runnamecellrenderer\"]');"
                  " if (b) { b.click(); } return !!b; })()")
_SHOW_MORE = ("(() => { const b = Array.from(document.querySelectorAll('button, a, span'))"
              ".find(e => e.textContent.trim() === 'Show more'); if (b) { b.click(); } return !!b; })()")
# Texts of the rendered description's table header cells (markdown -> <table>).
_DESCRIPTION_HEADERS = "JSON.stringify(Array.from(document.querySelectorAll('th')).map(th => th.textContent.trim()))"


async def _evaluate(cdp: _Session, expression: str) -> Any:
    answer = await cdp.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
    return answer["result"].get("value")


async def _until(cdp: _Session, expression: str, what: str) -> Any:
    """Evaluate `expression` until it is truthy (the React app renders after the load event)."""
    deadline = time.monotonic() + RENDER_TIMEOUT_S
    while time.monotonic() < deadline:
        value = await _evaluate(cdp, expression)
        if value:
            return value
        await cdp.drain(0.5)
    text = await _evaluate(cdp, "document.body.innerText")
    raise AssertionError(f"{what} not on the page within {RENDER_TIMEOUT_S:.0f} s; it shows: {text[:2000]}")


def _all_in_text(texts: set[str]) -> str:
    return f"(() => {{ const t = document.body.innerText; return {json.dumps(sorted(texts))}.every(s => t.includes(s)); }})()"


async def _open(cdp: _Session, url: str) -> None:
    await cdp.send("Page.navigate", {"url": url})
    await cdp.wait_event("Page.loadEventFired", timeout=RENDER_TIMEOUT_S)


async def _screenshot(cdp: _Session, path: Path) -> None:
    shot = await cdp.send("Page.captureScreenshot", {"format": "png"})
    path.write_bytes(base64.b64decode(shot["data"]))


# The artifact viewer's preview of an image: fetched as a blob and drawn; its width in pixels once loaded.
_PREVIEW_WIDTH = ("(() => { const i = Array.from(document.querySelectorAll('img')).find(i => i.src.startsWith('blob:')"
                  " && i.complete && i.naturalWidth > 0); return i ? i.naturalWidth : 0; })()")


async def _browse(port: int, base: str, experiment_id: str, parent_id: str, folder: Path,
                  child: tuple[str, str] = ("", "")) -> dict[str, Any]:
    import aiohttp

    seen: dict[str, Any] = {}
    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{port}/json/new?about:blank") as answer:
            target = await answer.json(content_type=None)
        async with http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            cdp = _Session(ws)
            for domain in ("Runtime", "Page"):
                await cdp.send(f"{domain}.enable")
            await cdp.send("Emulation.setDeviceMetricsOverride",
                           {"width": 1600, "height": 1000, "deviceScaleFactor": 1, "mobile": False})
            # The runs table of the experiment (workflowType: MLflow 3 opens in its GenAI view).
            await _open(cdp, f"{base}/#/experiments/{experiment_id}?workflowType=machine_learning")
            await _until(cdp, _all_in_text({"Run Name", NAME}), "the runs table with the parent run")
            await _until(cdp, _EXPAND_PARENT, "the parent row's expander")
            await _until(cdp, _all_in_text(NAMES), "the child runs' names")
            seen["table_text"] = await _evaluate(cdp, "document.body.innerText")
            await _screenshot(cdp, folder / "runs_table.png")
            # The parent run's page: its description, rendered from markdown, and its child runs.
            await _open(cdp, f"{base}/#/experiments/{experiment_id}/runs/{parent_id}?workflowType=machine_learning")
            await _until(cdp, _all_in_text({"Description", "Claims", "rate vs lambda", *NAMES}),
                         "the parent's description and child runs")
            seen["headers"] = json.loads(await _evaluate(cdp, _DESCRIPTION_HEADERS))
            await _evaluate(cdp, _SHOW_MORE)  # the description opens folded: unfold it for the screenshot
            await cdp.drain(1.0)
            seen["run_text"] = await _evaluate(cdp, "document.body.innerText")
            await _screenshot(cdp, folder / "parent_run.png")
            # A child run's reconstruction grid logged at a validation (log_image), in MLflow's artifact viewer.
            await _open(cdp, f"{base}/#/experiments/{experiment_id}/runs/{child[0]}/artifacts/{child[1]}")
            seen["image_width"] = await _until(cdp, _PREVIEW_WIDTH, "a logged reconstruction image")
            await cdp.drain(1.0)
            await _screenshot(cdp, folder / "child_images.png")
    return seen


def test_mlflow_ui_shows_the_readable_names_and_the_parent_description(
        storage: Path, described: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    binary = require_chromium()
    experiment_id, parent, children = _runs(described)
    folder = tmp_path_factory.mktemp("ui_screenshots")
    child = children[0].info.run_id
    images = make_client(described).list_artifacts(child, "images")
    grid = sorted(info.path for info in images if "+step+20+" in info.path and info.path.endswith(".png"))[0]
    with ui_server(storage, folder / "ui.log") as base, chromium(binary, folder / "profile") as devtools:
        seen = asyncio.run(_browse(devtools, base, experiment_id, parent.info.run_id, folder, (child, grid)))
    print(f"\nscreenshots: {folder / 'runs_table.png'}, {folder / 'parent_run.png'}, {folder / 'child_images.png'}")
    assert seen["image_width"] == 8 * 17 + 1  # the step-20 grid (8 images of 16 px, 1 px apart), drawn by MLflow
    for name in NAMES:
        assert name in seen["table_text"] and name in seen["run_text"]
    # The claims table is a rendered table on the page, with the columns of `raysweep claims`.
    assert {"claim", "group", "verdict"} <= set(seen["headers"])
    for shot in ("runs_table.png", "parent_run.png", "child_images.png"):
        data = (folder / shot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
