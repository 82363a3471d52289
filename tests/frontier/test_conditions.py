"""One row per condition: runs that differ in a swept key besides lambda, beta, the rate target and
the seed are different conditions, each with its own claim rows (and report panels); a lambda = 0
baseline joins every condition it matches. Read back from a real SQLite MLflow store written with
raysweep's tracking conventions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_store import log_sweep

from raysweep.frontier import claims as C
from raysweep.frontier.collect import collect_runs
from raysweep.frontier.selection import groups
from raysweep.tracking.store import tracking_uri_for

LAMBDAS = (0.0, 0.5, 1.0)


def _runs(rng: np.random.Generator, slope: float, params: dict, seeds: range = range(4),
          baseline_params: dict | None = None) -> list[dict]:
    """Fixed-beta runs at beta 0.1: rate = 20 + slope * lambda + a seed offset + noise; lambda 0 is
    pixel SSE alone (``loss.neural: none``) with `baseline_params` (default `params`)."""
    offsets = rng.normal(0.0, 2.0, max(seeds) + 1)
    runs = []
    for lam in LAMBDAS:
        for seed in seeds:
            runs.append({"loss": "none" if lam == 0 else "box_blur", "lambda_neural": lam, "beta": 0.1, "seed": seed,
                         "rate": 20.0 + slope * lam + offsets[seed] + rng.normal(0.0, 0.3), "mse": 0.01,
                         "anisotropy": 1.0,
                         "params": dict(baseline_params if lam == 0 and baseline_params is not None else params)})
    return runs


def _rate_rows(rows: list[C.ClaimRow]) -> dict[str, C.ClaimRow]:
    found = [r for r in rows if r.claim == C.RATE_VS_LAMBDA]
    assert len({r.condition for r in found}) == len(found)
    return {r.condition: r for r in found}


def test_two_grid_spacings_with_opposite_slopes_are_two_rows_not_one_undecided(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    uri = tracking_uri_for(tmp_path, None)
    runs = (_runs(rng, -4.0, {"data.xysquares.grid_spacing": 4, "loss.box_blur.radius": 2})
            + _runs(rng, +4.0, {"data.xysquares.grid_spacing": 8, "loss.box_blur.radius": 2}))
    log_sweep(uri, "spacing", "spacing", runs)
    read = collect_runs(uri, "spacing").runs
    rows = _rate_rows(C.compute_claims(read))
    assert set(rows) == {"grid_spacing=4", "grid_spacing=8"}
    assert rows["grid_spacing=4"].verdict == C.FALLS and rows["grid_spacing=8"].verdict == C.RISES
    for condition, row in rows.items():  # each condition has its own 4 seeds x 3 lambdas, baselines included
        assert row.n == 12 and row.n_seeds == 4 and row.group.endswith(f"/ {condition}")
    # pooled into one group they cancel: the silent failure this guards against
    merged = read.drop(columns=[c for c in read if c.startswith("params.data.xysquares")])
    [pooled] = [r for r in C.compute_claims(merged) if r.claim == C.RATE_VS_LAMBDA]
    assert pooled.verdict not in (C.FALLS, C.RISES)
    # the report's panels split the same way
    assert sorted(title for title, _ in groups(read)) == [
        "xysquares / vector_vae / box_blur / grid_spacing=4", "xysquares / vector_vae / box_blur / grid_spacing=8"]


def test_a_sweep_over_the_balancer_splits_and_a_baseline_joins_every_condition_it_matches(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    uri = tracking_uri_for(tmp_path, None)
    # the balancer swept on the neural runs; the lambda = 0 baselines ran once, with it on
    on = _runs(rng, -3.0, {"loss.balancer": True})
    off = [r for r in _runs(rng, 0.0, {"loss.balancer": False}) if r["lambda_neural"] > 0]
    log_sweep(uri, "balancer", "balancer", on + off)
    rows = _rate_rows(C.compute_claims(collect_runs(uri, "balancer").runs))
    assert set(rows) == {"balancer=True", "balancer=False"}
    assert rows["balancer=True"].n == 12  # its own baselines
    assert rows["balancer=False"].n == 8 and rows["balancer=False"].n_seeds == 4  # no baseline with the balancer off

    # a key that does not apply to the baseline (the box blur's radius): the baselines join both radii
    uri2 = tracking_uri_for(tmp_path / "radius", None)
    small = _runs(rng, -3.0, {"loss.box_blur.radius": 2})
    large = [r for r in _runs(rng, -1.0, {"loss.box_blur.radius": 4}) if r["lambda_neural"] > 0]
    log_sweep(uri2, "radius", "radius", small + large)
    rows = _rate_rows(C.compute_claims(collect_runs(uri2, "radius").runs))
    assert set(rows) == {"radius=2", "radius=4"}
    assert rows["radius=2"].n == rows["radius=4"].n == 12  # the same 4 baselines in each
    assert rows["radius=2"].slope == pytest.approx(-3.0, abs=0.6)


def test_bookkeeping_keys_and_a_single_value_never_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    uri = tracking_uri_for(tmp_path, None)
    runs = _runs(rng, -3.0, {"data.xysquares.grid_spacing": 4})
    for i, run in enumerate(runs):  # where the runs were kept differs; what was trained does not
        run["params"].update({"data.num_workers": i % 2, "train.val_every": 100 + i, "train.device": "cpu"})
    log_sweep(uri, "same", "same", runs)
    [row] = [r for r in C.compute_claims(collect_runs(uri, "same").runs) if r.claim == C.RATE_VS_LAMBDA]
    assert row.condition == "" and row.n == 12 and row.verdict == C.FALLS
