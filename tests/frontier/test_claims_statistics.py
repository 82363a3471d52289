"""The claims' error rates by simulation at the seed counts people use (2 to 5), on a synthetic
truth whose seeds are shared across lambda (offset sd 2 shared by a seed's runs, residual sd 0.5):
the blocked slope's power and coverage, the paired shift's coverage, false verdicts at no effect,
"negligible" with many seeds, the sequential procedure of ``--until-decided`` across its looks,
and the same statistics read back through a real SQLite MLflow store.

Each simulation is one frame holding every draw as its own group, so one ``compute_claims`` call
decides every draw through the product's own code (synthetic_truth.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from synthetic_store import log_sweep
from synthetic_truth import frontier_runs, sequential_slope, shift_decisions, slope_decisions, slope_runs

from raysweep.frontier import claims as C
from raysweep.frontier import statistics as S
from raysweep.frontier.collect import collect_runs
from raysweep.tracking.store import tracking_uri_for

DRAWS = 200


def _rows(frame, claim: str) -> list[C.ClaimRow]:
    rows = [r for r in C.compute_claims(frame) if r.claim == claim]
    assert len(rows) == frame["dataset"].nunique()
    return rows


def test_a_slope_of_minus_2_at_3_seeds_falls_in_at_least_90_percent_of_draws() -> None:
    rows = _rows(slope_runs(np.random.default_rng(11), DRAWS, 3, slope=-2.0), C.RATE_VS_LAMBDA)
    assert {r.method for r in rows} == {S.BLOCKED_METHOD}
    falls = np.mean([r.verdict == C.FALLS for r in rows])
    assert falls >= 0.90, falls
    assert np.median([r.icc for r in rows]) > 0.5  # the seeds held most of the residual: what blocking bought


def test_no_slope_at_3_seeds_gives_few_false_verdicts_and_covers() -> None:
    rows = _rows(slope_runs(np.random.default_rng(103), DRAWS, 3, slope=0.0), C.RATE_VS_LAMBDA)
    false = np.mean([r.verdict in (C.FALLS, C.RISES) for r in rows])
    covered = np.mean([r.ci_low <= 0.0 <= r.ci_high for r in rows])
    assert false <= 0.07, false
    assert 0.90 <= covered <= 0.99, covered


def test_the_paired_shift_at_3_seeds_through_the_rows() -> None:
    rng = np.random.default_rng(203)
    none = _rows(frontier_runs(rng, DRAWS, 3, shift=0.0), C.FRONTIER_SHIFT)
    assert {r.method for r in none} == {S.PAIRED_METHOD} and all(r.n_seeds == 3 for r in none)
    false = np.mean([r.verdict in (C.SHIFTS_DOWN, C.SHIFTS_UP) for r in none])
    covered = np.mean([r.ci_low <= 0.0 <= r.ci_high for r in none])
    assert false <= 0.07, false
    assert 0.90 <= covered <= 0.99, covered
    # the rows and the array path agree draw by draw (so the 1000-draw checks below speak for the rows)
    again = shift_decisions(np.random.default_rng(203), DRAWS, 3, shift=0.0)
    by_draw = sorted(none, key=lambda r: int(r.dataset[1:]))
    assert [r.ci_low for r in by_draw] == pytest.approx([low for _, low, _ in again])


@pytest.mark.parametrize("seeds", [2, 3, 4, 5])
def test_slope_and_shift_error_rates_over_1000_draws(seeds: int) -> None:
    """The 95% intervals at 2 to 5 seeds, 1000 draws each (binomial sd 0.7%): coverage 93.5-96.5% of
    the slope (exact under the model) and 92.5-97.5% of the shift, false verdicts at most 6.5%."""
    rng = np.random.default_rng(300 + seeds)
    for truth, decisions, band in (
        (0.0, slope_decisions(rng, 1000, seeds, 0.0), (0.935, 0.965)),
        (0.0, shift_decisions(rng, 1000, seeds, 0.0), (0.925, 0.975)),
        (-1.5, shift_decisions(rng, 1000, seeds, -1.5), (0.925, 0.975)),
    ):
        covered = np.mean([low <= truth <= high for _, low, high in decisions])
        assert band[0] <= covered <= band[1], (truth, covered)
        if truth == 0.0:
            false = np.mean([v in ("down", "up") for v, _, _ in decisions])
            assert false <= 0.065, false


def _half_width(estimate: S.Estimate) -> float:
    low, high = estimate.interval(S.ALPHA)
    return (high - low) / 2.0


def test_pooled_seeds_projects_what_a_one_seed_per_run_design_needs_for_the_same_width() -> None:
    """The row's "pooled seeds" against the design it stands for, simulated at the issue's truth
    (offset sd 2 against residual sd 0.5: icc 0.94). Exactly, 3 blocked seeds' expected width takes 41
    seeds of a design whose every run has its own seed, 10 take 162. At 10 seeds the projection is
    precise: that design run at the median projection gives intervals as narrow as the blocked ones
    (medians within 10%), and at a third of it clearly wider. At 3 seeds it rests on 2 degrees of
    freedom of seed variance: its median lands near the truth, single sweeps spread widely."""
    rng = np.random.default_rng(404)
    lambdas = np.array([0.0, 0.25, 0.5, 0.75, 1.0])

    def blocked(n_seeds: int) -> tuple[list[int], float]:
        x, seeds = np.tile(lambdas, n_seeds), np.repeat(np.arange(n_seeds), 5)
        projected, halves = [], []
        for _ in range(DRAWS):
            y = -2.0 * x + rng.normal(0, 2.0, n_seeds)[seeds] + rng.normal(0, 0.5, len(x))
            estimate = S.fit_slope(x, y, list(seeds))
            projected.append(S.pooled_seeds_for_width(estimate, limit=2000))
            halves.append(_half_width(estimate))
        return projected, float(np.median(halves))

    def independent_half_width(n_seeds: int) -> float:
        x = np.tile(lambdas, n_seeds)
        halves = [_half_width(S.fit_slope(x, -2.0 * x + rng.normal(0, 2.0, len(x)) + rng.normal(0, 0.5, len(x)),
                                          list(range(len(x)))))  # every run its own seed: the pooled fit
                  for _ in range(DRAWS)]
        return float(np.median(halves))

    projected, _ = blocked(3)
    assert all(p is not None for p in projected)
    assert 25 <= np.median(projected) <= 60, np.median(projected)
    projected, blocked_half = blocked(10)
    need = int(np.median(projected))
    assert 130 <= need <= 190, need
    assert independent_half_width(need) == pytest.approx(blocked_half, rel=0.10)
    assert independent_half_width(need // 3) > 1.5 * blocked_half


def test_pooled_seeds_is_no_more_than_the_seeds_run_when_the_seeds_hold_nothing() -> None:
    rng = np.random.default_rng(405)
    x = np.tile(np.array([0.0, 0.25, 0.5, 0.75, 1.0]), 4)
    seeds = list(np.repeat(np.arange(4), 5))
    projected = [S.pooled_seeds_for_width(S.fit_slope(x, -2.0 * x + rng.normal(0, 0.5, len(x)), seeds))
                 for _ in range(DRAWS)]
    assert np.median(projected) <= 4  # blocking bought nothing and cost 3 degrees of freedom
    rows = _rows(slope_runs(np.random.default_rng(406), 20, 3, slope=-2.0), C.RATE_VS_LAMBDA)
    assert all(r.pooled_seeds is None or r.pooled_seeds > r.n_seeds for r in rows)  # None: more than 100
    assert sum(r.pooled_seeds is not None for r in rows) >= 10


def test_no_effect_with_many_seeds_is_negligible() -> None:
    rows = _rows(slope_runs(np.random.default_rng(7), 50, 12, slope=0.0), C.RATE_VS_LAMBDA)
    assert np.mean([r.verdict == C.NEGLIGIBLE for r in rows]) >= 0.9
    shifts = _rows(frontier_runs(np.random.default_rng(8), 50, 12, shift=0.0), C.FRONTIER_SHIFT)
    assert np.mean([r.verdict == C.NEGLIGIBLE for r in shifts]) >= 0.9
    # a fall well inside a wide margin still falls: a direction that is shown is never called negligible
    [row] = C.compute_claims(slope_runs(np.random.default_rng(9), 1, 12, slope=-2.0), margins={C.RATE_VS_LAMBDA: 50.0})[:1]
    assert row.verdict == C.FALLS


def test_an_undecided_row_says_how_many_seeds_to_add() -> None:
    rows = _rows(slope_runs(np.random.default_rng(5), 40, 2, slope=-0.8), C.RATE_VS_LAMBDA)
    undecided = [r for r in rows if r.verdict == C.UNDECIDED]
    assert undecided, "a slope of -0.8 at 2 seeds leaves some draws undecided"
    for row in undecided:
        assert row.seeds_needed is None or row.seeds_needed > row.n_seeds
        assert "more seed" in row.reason or "more than" in row.reason


def test_sequential_looks_hold_the_false_verdict_rate_and_decide_a_real_slope() -> None:
    rng = np.random.default_rng(2026)
    at_zero = [sequential_slope(rng, 0.0) for _ in range(500)]
    false = np.mean([v in ("down", "up") for v, _ in at_zero])
    assert false <= 0.06, false
    at_minus_2 = [sequential_slope(rng, -2.0) for _ in range(200)]
    assert np.mean([v == "down" for v, _ in at_minus_2]) >= 0.95
    mean_seeds = np.mean([s for _, s in at_minus_2])
    assert 3 <= mean_seeds <= 5, mean_seeds  # most draws decide at the first look (3 seeds)


def test_the_same_statistics_read_back_from_a_real_mlflow_store(tmp_path: Path) -> None:
    frame = slope_runs(np.random.default_rng(3), 4, 3, slope=-2.0)
    uri = tracking_uri_for(tmp_path, None)
    runs = [dict(r) for r in frame.drop(columns=["run_id", "status"]).to_dict("records")]
    log_sweep(uri, "truth", "truth", runs)
    read = collect_runs(uri, "truth").runs
    assert len(read) == len(frame)
    expected = {(r.dataset, r.claim): (r.slope, r.ci_low, r.verdict, r.icc) for r in C.compute_claims(frame)}
    got = {(r.dataset, r.claim): (r.slope, r.ci_low, r.verdict, r.icc) for r in C.compute_claims(read)}
    assert got.keys() == expected.keys()
    for key, (slope, low, verdict, icc) in expected.items():
        if slope is None:
            assert got[key][0] is None
            continue
        assert got[key][0] == pytest.approx(slope) and got[key][1] == pytest.approx(low)
        assert got[key][2] == verdict and got[key][3] == pytest.approx(icc)
