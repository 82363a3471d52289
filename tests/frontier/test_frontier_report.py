"""The frontier report, drawn from a real MLflow store filled by real sweeps, rendered in
headless Chromium: every image loads, the console shows no error, runs link to MLflow, and the
claims section opens the page with one styled verdict cell per claim row."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from chromium_cdp import inspect_page, require_chromium
from conftest import EXPERIMENT

from raysweep.cli import main
from raysweep.frontier.claims import VERDICTS
from raysweep.frontier.collect import collect_runs
from raysweep.frontier.plots import groups
from raysweep.frontier.report import build_report
from raysweep.tracking.store import get_or_create_experiment, make_client


def test_collect_reads_params_metrics_and_tags(report_store: tuple[str, Path]) -> None:
    uri, _ = report_store
    collected = collect_runs(uri, EXPERIMENT)
    runs = collected.runs
    assert len(runs) == 8 and len(collected.parent_run_ids) == 2
    assert set(runs["status"]) == {"finished"}
    assert runs["geco"].sum() == 4 and set(runs.loc[runs["geco"], "target_rate"]) == {4.0}
    assert sorted(runs.loc[~runs["geco"], "beta"]) == [0.03, 0.03, 0.125, 0.125]
    assert set(runs["lambda_neural"]) == {0.0, 0.5}
    assert runs["rate"].gt(0).all() and runs["mse"].gt(0).all()
    assert set(runs["dataset"]) == {"xysquares"} and set(runs["loss"]) == {"box_blur"}


def test_report_renders_in_headless_chromium(report_store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = report_store
    out = tmp_path / "report"
    index = build_report(EXPERIMENT, uri, out)
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    figures = [p for p in pngs if "_recon_" not in p]
    assert [p[-5] for p in figures] == ["a", "b", "c", "d"], "all four figures of the one group were drawn"
    assert any("_recon_" in p for p in pngs), "and its reconstruction panel's strips (runs log their grids)"
    client = make_client(uri)
    for parent in collect_runs(uri, EXPERIMENT).parent_run_ids:
        logged = {f.path for f in client.list_artifacts(parent, "report")}
        assert {"report/index.html", "report/report.css", "report/plots"} <= logged
        assert {"claims.json", "claims.csv"} <= {f.path for f in client.list_artifacts(parent)}
    claims = json.loads((out / "claims.json").read_text())
    # one group: rate vs lambda at each of the two betas, the shift of lambda 0.5, anisotropy at R* = 4 nats
    assert [(c["claim"], c["beta"] or c["lambda_neural"] or c["target_rate"]) for c in claims] == [
        ("rate_vs_lambda", 0.03), ("rate_vs_lambda", 0.125), ("frontier_shift", 0.5), ("anisotropy_vs_lambda", 4.0)]
    assert all(c["verdict"] in VERDICTS and (c["reason"] or c["ci_low"] is not None) for c in claims)
    assert claims[0]["reason"] == "no replicate per lambda; add seeds: search.seeds"  # one seed at fixed beta
    assert "R* = 4 nats" in index.read_text()  # panel (d) says which target it compares

    binary = require_chromium()
    screenshot = tmp_path / "report.png"
    page = inspect_page(binary, index.resolve().as_uri(), tmp_path / "chromium_profile", screenshot=screenshot)
    if os.environ.get("RAYSWEEP_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["RAYSWEEP_REPORT_SCREENSHOT"])
    assert page.title == f"raysweep report: {EXPERIMENT}"
    assert len(page.images) == len(pngs)
    for image in page.images:
        assert image["complete"] and image["naturalWidth"] > 0, image
    assert page.errors == []
    assert len(page.links) == 8 and all("/#/experiments/" in link and "/runs/" in link for link in page.links)
    assert page.first_section == "claims"
    assert [v["text"] for v in page.verdicts] == [c["verdict"] for c in claims]
    for cell in page.verdicts:
        assert cell["className"] == "verdict verdict-" + "-".join(cell["text"].split()) and cell["height"] > 0
    styled = {v["text"]: v["color"] for v in page.verdicts}
    assert styled.get("insufficient data", "rgb(91, 101, 114)") == "rgb(91, 101, 114)"  # report.css's --muted
    assert screenshot.stat().st_size > 10_000


def test_report_errors_name_the_experiment(report_store: tuple[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    uri, storage = report_store
    assert main(["report", "--experiment", "no-such-sweep", "--tracking-uri", uri, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: --experiment 'no-such-sweep'") and "\n" not in err
    get_or_create_experiment(make_client(uri), "empty-experiment")
    assert main(["report", "--experiment", "empty-experiment", "--storage", str(storage), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "--experiment 'empty-experiment' holds no trial runs" in err and "\n" not in err


def test_report_cli_writes_the_page(report_store: tuple[str, Path], tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, storage = report_store
    out = tmp_path / "cli_report"
    assert main(["report", "--experiment", EXPERIMENT, "--storage", str(storage), "--out", str(out), "--no-log"]) == 0
    printed = capsys.readouterr().out
    assert (out / "index.html").is_file() and "file://" in printed and "raysweep ui --tracking-uri" in printed


def test_sse_runs_join_each_neural_loss_group_as_lambda_zero() -> None:
    runs = pd.DataFrame({
        "run_id": list("abcd"), "dataset": "xysquares", "model": "vector_vae", "pixel_loss": "sse",
        "loss": ["none", "box_blur", "lpips", "box_blur"], "lambda_neural": [0.0, 0.5, 0.5, 0.9],
    })
    found = {title: sorted(members["run_id"]) for title, members in groups(runs)}
    assert found == {"xysquares / vector_vae / box_blur": ["a", "b", "d"],
                     "xysquares / vector_vae / lpips": ["a", "c"]}
    only_sse = runs[runs["loss"] == "none"]
    assert [title for title, _ in groups(only_sse)] == ["xysquares / vector_vae / none"]
