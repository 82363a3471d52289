"""Per-seed operating points end to end: a real matched-rate sweep with ``search.seeds`` on local Ray
with the real tiny trainer (one point per seed in ``operating_points.csv`` and in the report), then
``raysweep extend`` adding a seed: only the new seed's trials run, and its first trial starts from
the beta the sweep's points predict."""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tune: tune_helpers
from tune_helpers import tiny_sweep, write_sweep  # noqa: E402

from raysweep.cli import main  # noqa: E402
from raysweep.tune.matched_rate.points import META_KEY  # noqa: E402
from raysweep.tune.matched_rate.warm import RatePredictor  # noqa: E402

pytestmark = pytest.mark.slow
TARGET = 8.0  # nats; the tiny trainer reaches ~10 nats at beta 0.02 and ~1.4 at beta 0.125 in 200 steps
TOLERANCE = 0.15


def _trials(sweep_dir: Path) -> dict[str, dict]:
    """Trial folder name -> its Tune config (params.json)."""
    return {d.name: json.loads((d / "params.json").read_text()) for d in sweep_dir.iterdir()
            if (d / "params.json").is_file()}


def _rows(sweep_dir: Path) -> list[dict]:
    with open(sweep_dir / "operating_points.csv") as fh:
        return list(csv.DictReader(fh))


def test_seeds_get_their_own_points_and_extend_adds_a_warm_seed(ray_address: str, tmp_path: Path) -> None:
    from raysweep.frontier.report import build_report

    block = {"targets": [TARGET], "tolerance": TOLERANCE, "strategy": "bisection", "beta_min": 0.003,
             "beta_max": 0.3, "probes": 2, "max_trials": 8}
    raw = tiny_sweep("seeded", search={"mode": "matched_rate", "cells": [{"loss.lambda_neural": 0.0}],
                                       "seeds": [0, 1], "matched_rate": block})
    raw["trial"]["train"].update(max_steps=200, val_every=100)
    storage = tmp_path / "runs"
    assert main(["sweep", str(write_sweep(tmp_path, raw)), "--storage", str(storage), "--address", ray_address]) == 0
    sweep_dir = storage / "seeded"
    rows = _rows(sweep_dir)
    assert [r["seed"] for r in rows] == ["0", "1"] and all(r["within_tolerance"] == "True" for r in rows), rows
    assert {r["cell"] for r in rows} == {"base"}  # the seed is its own column, not part of the cell
    before = _trials(sweep_dir)
    assert sum(int(r["trials"]) for r in rows) == len(before)
    assert {c["train.seed"] for c in before.values()} == {0, 1}
    stamps = {name: (sweep_dir / name / "result.json").stat().st_mtime_ns for name in before}

    assert main(["extend", str(sweep_dir), "--set", "search.seeds=[0,1,2]", "--address", ray_address]) == 0
    after = _trials(sweep_dir)
    added = {name: c for name, c in after.items() if name not in before}
    assert added and all(c["train.seed"] == 2 for c in added.values())  # nothing of seeds 0 and 1 reran
    assert {name: (sweep_dir / name / "result.json").stat().st_mtime_ns for name in before} == stamps
    grown = _rows(sweep_dir)
    assert [r["seed"] for r in grown] == ["0", "1", "2"] and grown[:2] == rows
    assert grown[2]["within_tolerance"] == "True" and int(grown[2]["trials"]) == len(added)
    # warm: seed 2's first trial is the prediction from seeds 0 and 1's points (source "seed": their
    # point nearest the target, moved to it along their slope), not a cold k-section of the bracket
    predictor = RatePredictor(TOLERANCE)
    for r in rows:
        predictor.add(("base", TARGET, int(r["seed"])), math.log(float(r["beta"])), float(r["rate"]))
    prediction = predictor.predict(("base", TARGET, 2))
    assert prediction.source == "seed"
    expected = prediction.centre
    betas = sorted(math.log(c["objective.beta"]) for c in added.values())
    assert any(x == pytest.approx(expected, abs=1e-9) for x in betas), (betas, expected)
    assert all(c[META_KEY]["seed"] == 2 for c in added.values())

    index = build_report("seeded", f"sqlite:///{storage / 'mlflow.db'}", tmp_path / "report", log_to_mlflow=False)
    page = index.read_text()
    assert page.count('class="operating-point"') == 3 and "<th>seed</th>" in page
