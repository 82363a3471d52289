"""``search.mode: matched_rate`` end to end: a real sweep on local Ray (2 CPUs) with the real tiny
trainer, its operating points on disk, in MLflow (parent-run artifact, tags on exactly the chosen
child runs) and in the frontier report; and the sweep file's validation of the mode."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tune: tune_helpers
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "frontier"))  # tests/frontier: chromium_cdp

from chromium_cdp import find_chromium, inspect_page  # noqa: E402
from tune_helpers import tiny_sweep, write_sweep  # noqa: E402

from raysweep.cli import main  # noqa: E402

TARGET = 8.0  # nats; the tiny trainer reaches ~10 nats at beta 0.02 and ~1.4 at beta 0.125 in 200 steps
TOLERANCE = 0.15
CELLS = [{"loss.neural": "none", "loss.lambda_neural": 0.0}, {"loss.neural": "box_blur", "loss.lambda_neural": 0.5}]


def matched_rate_sweep(name: str, **matched: object) -> dict:
    """A tiny matched-rate sweep: 2 cells x 1 target, bisection, 200-step trials."""
    block = {"targets": [TARGET], "tolerance": TOLERANCE, "strategy": "bisection", "beta_min": 0.003,
             "beta_max": 0.3, "probes": 2, "max_trials": 8, **matched}
    raw = tiny_sweep(name, search={"mode": "matched_rate", "cells": CELLS, "matched_rate": block})
    raw["trial"]["train"].update(max_steps=200, val_every=100)
    return raw


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_matched_rate_sweep_records_operating_points(ray_local: None, tmp_path: Path) -> None:
    from raysweep.frontier.report import build_report
    from raysweep.tracking.operating_points import OPERATING_POINT_TAG, TARGET_RATE_TAG
    from raysweep.tracking.store import PARENT_TAG, TRIAL_ID_TAG, make_client, quote, search_all
    from raysweep.tune.load import sweep_from_dict
    from raysweep.tune.run import run_sweep
    from raysweep.tune.summary import format_outcome

    outcome = run_sweep(sweep_from_dict(matched_rate_sweep("mr")), storage=str(tmp_path), verbose=0)
    assert outcome.num_errors == 0 and outcome.complete
    rows = json.loads((tmp_path / "mr" / "operating_points.json").read_text())
    assert (tmp_path / "mr" / "operating_points.csv").is_file()
    assert len(rows) == len(CELLS) == len(outcome.operating_points)
    assert sorted(r["loss.lambda_neural"] for r in rows) == [0.0, 0.5]
    assert {r["cell"] for r in rows} == {"loss.lambda_neural=0.0,loss.neural=none",
                                         "loss.lambda_neural=0.5,loss.neural=box_blur"}
    for row in rows:
        assert row["target_rate"] == TARGET and row["strategy"] == "bisection" and row["within_tolerance"]
        assert abs(row["rate"] / TARGET - 1.0) <= TOLERANCE, row
        assert 0.003 / 10 < row["beta"] < 0.3 * 10 and row["trials"] >= 1 and row["epochs"] > 0
    assert "operating points (2; rate in nats)" in format_outcome(outcome)

    client = make_client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mr")
    [parent] = search_all(client, [experiment.experiment_id], "tags.`raysweep.role` = 'sweep'")
    logged = {f.path for f in client.list_artifacts(parent.info.run_id, "operating_points")}
    assert logged == {"operating_points/operating_points.csv", "operating_points/operating_points.json"}
    children = search_all(client, [experiment.experiment_id], f"tags.`{PARENT_TAG}` = {quote(parent.info.run_id)}")
    assert len(children) == sum(r["trials"] for r in rows)  # every trial of the search has its run
    tagged = {c.data.tags[TRIAL_ID_TAG]: c.data.tags for c in children if OPERATING_POINT_TAG in c.data.tags}
    assert set(tagged) == {r["trial_id"] for r in rows}
    assert all(t[OPERATING_POINT_TAG] == "true" and float(t[TARGET_RATE_TAG]) == TARGET for t in tagged.values())

    index = build_report("mr", f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "report", log_to_mlflow=False)
    page = index.read_text()
    assert 'id="operating-points"' in page and page.count('class="operating-point"') == len(rows)
    assert {p.name for p in (tmp_path / "report" / "plots").glob("operating_points_*.png")} == {
        "operating_points_anisotropy.png", "operating_points_beta.png"}
    binary = find_chromium()
    if binary is not None:  # the page with its operating points renders: every image loads, no console error
        shown = inspect_page(binary, index.resolve().as_uri(), tmp_path / "chromium_profile")
        assert shown.images and all(i["complete"] and i["naturalWidth"] > 0 for i in shown.images)
        assert shown.errors == []


@pytest.mark.parametrize(("search", "key"), [
    ({"grid": {"objective.beta": [0.5, 1.0]}}, "search.grid.objective.beta"),
    ({"cells": [{"objective.beta": 0.5}]}, "search.cells[0].objective.beta"),
    ({"cells": [{"objective.geco.target_rate": 4.0}], "strategy": "geco"}, "search.cells[0].objective.geco.target_rate"),
    ({"distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}}}, "search.distributions.train.lr"),
    ({"scheduler": {"type": "asha", "metric": "rate", "mode": "min"}}, "search.scheduler"),
])
def test_validate_rejects_what_the_mode_owns(search: dict, key: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    strategy = search.pop("strategy", "bisection")
    raw = tiny_sweep("bad", search={"mode": "matched_rate", **search,
                                    "matched_rate": {"targets": [TARGET], "strategy": strategy}})
    assert main(["validate", str(write_sweep(tmp_path, raw))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{key}:" in err, err


def test_validate_describes_a_matched_rate_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_sweep(tmp_path, matched_rate_sweep("ok"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "trials: at most 16 (2 cells x 1 target = 2 operating points, up to 8 trials each)" in out
    assert "search: matched_rate, strategy bisection, targets 8 nats, tolerance 0.15" in out
    # seeds get their own operating points, and the count says so
    assert main(["validate", str(path), "--set", "search.seeds=[0,1,2]"]) == 0
    assert ("trials: at most 48 (6 cells (2 x 3 seeds) x 1 target = 6 operating points, up to 8 trials each)"
            in capsys.readouterr().out)
    # the resolved sweep (what `resume` reads) validates again
    from raysweep.tune.load import dump_sweep, load_sweep, sweep_from_dict

    assert sweep_from_dict(yaml.safe_load(dump_sweep(load_sweep(path)))).search.mode == "matched_rate"


def test_trial_report_wrapper_keeps_a_diverged_trial_unconverged() -> None:
    from raysweep.tune.matched_rate.points import META_KEY, PROGRESS, RATE_ERROR
    from raysweep.tune.trainable import diverged_report, matched_rate_target, order_metrics, wrap_report

    sent: list[dict] = []

    def emit(metrics: dict, checkpoint: object) -> None:
        sent.append(metrics)

    assert wrap_report(emit, None, None) is emit and matched_rate_target({"objective.beta": 1.0}) is None
    target = matched_rate_target({"objective.beta": 1.0, META_KEY: {"cell": "base", "target": TARGET}})
    send = wrap_report(emit, target, None)
    send(order_metrics({"rate": TARGET, "step": 10}), None)
    send(diverged_report({"rate": float("nan"), "step": 20, "status": "diverged"}), None)
    assert sent[0][RATE_ERROR] == 0.0 and sent[0]["diverged"] == 0
    assert sent[1]["diverged"] == 1 and sent[1][PROGRESS] < 1.0 and sent[1][RATE_ERROR] == float("inf")
