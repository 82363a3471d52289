"""The claims against known truths: two-stage slopes over seeds with t intervals (read back from a real
SQLite MLflow store written with raysweep's tracking conventions), the frontier shift on curves
whose average gap is known in closed form, paired over seeds, insufficient data, off-target runs,
and the claims in the CLI, the report page, its files and the sweep's MLflow parent run. The
error rates at 2 to 5 seeds are in test_claims_statistics.py."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_store import log_sweep

from raysweep.cli import main
from raysweep.frontier import claims as C
from raysweep.frontier import claims_table as T
from raysweep.frontier import statistics as S
from raysweep.frontier.collect import collect_runs
from raysweep.frontier.plots import plot_variance_profiles, profile_targets
from raysweep.frontier.report import build_report
from raysweep.tracking.store import get_or_create_experiment, make_client, tracking_uri_for

LAMBDAS = [0.0, 0.25, 0.5, 0.75, 1.0]
SEEDS = [0, 1, 2, 3]
NOISE = 0.5  # nats, sd of the rate around its line
SLOPES = {0.5: -4.0, 2.0: 0.0}  # beta -> true slope of rate against lambda, nats per unit lambda
BASE_RATE = {0.5: 20.0, 2.0: 8.0}
GROUP = "xysquares / vector_vae / box_blur"
BASE = {"group": GROUP, "dataset": "xysquares", "model": "vector_vae", "loss": "box_blur", "pixel_loss": "sse"}


def rd_runs(rng: np.random.Generator, slopes: dict[float, float] = SLOPES, seeds: list[int] = SEEDS,
            lambdas: list[float] = LAMBDAS, noise: float = NOISE) -> list[dict]:
    """Fixed-beta runs: rate = base(beta) + slope(beta) * lambda + N(0, noise); lambda 0 is pixel SSE alone."""
    runs = []
    for beta, slope in slopes.items():
        for lam in lambdas:
            for seed in seeds:
                rate = BASE_RATE[beta] + slope * lam + rng.normal(0.0, noise)
                mse = 0.02 * math.sqrt(beta) * (1.0 + 0.05 * lam)
                runs.append({"loss": "none" if lam == 0 else "box_blur", "lambda_neural": lam, "beta": beta,
                             "seed": seed, "rate": rate, "mse": mse, "distortion_sse": mse * 3072,
                             "anisotropy": 1.0})
    return runs


def matched_runs(rng: np.random.Generator) -> list[dict]:
    """A bisection matched-rate sweep at R* = 10 nats: 9 operating points (3 lambdas x 3 seeds,
    anisotropy = 3 - 2 lambda + N(0, 0.1)), 2 of them 15 % off target with a wild anisotropy, and
    4 search probes (no target) at betas the search chose."""
    runs = []
    for lam in (0.0, 0.5, 1.0):
        for seed in (0, 1, 2):
            off = lam == 0.5 and seed < 2
            runs.append({"loss": "none" if lam == 0 else "box_blur", "lambda_neural": lam, "seed": seed,
                         "beta": float(rng.uniform(0.1, 2.0)), "op_target": 10.0,
                         "rate": 11.5 if off else 10.0 * (1 + rng.uniform(-0.04, 0.04)), "mse": 0.02,
                         "anisotropy": 9.0 if off else 3.0 - 2.0 * lam + rng.normal(0.0, 0.1)})
    for beta in (0.3, 0.7, 1.1, 1.9):
        runs.append({"loss": "box_blur", "lambda_neural": 0.5, "seed": 0, "beta": beta, "rate": 30 * beta,
                     "mse": 0.02, "anisotropy": 1.0})
    return runs


def verdict_runs(rng: np.random.Generator) -> list[dict]:
    """Three betas, 4 seeds sharing an offset of sd 2: a slope of -4 (falls), none with little noise
    (negligible), and -1.5 under a residual of sd 3 (undecided)."""
    offsets = rng.normal(0.0, 2.0, len(SEEDS))
    runs = []
    for beta, slope, noise in ((0.5, -4.0, 0.5), (2.0, 0.0, 0.3), (1.0, -1.5, 3.0)):
        for lam in LAMBDAS:
            for seed in SEEDS:
                runs.append({"loss": "none" if lam == 0 else "box_blur", "lambda_neural": lam, "beta": beta, "seed": seed,
                             "rate": 15.0 + slope * lam + offsets[seed] + rng.normal(0.0, noise), "mse": 0.02 * beta,
                             "anisotropy": 1.0})
    return runs


MATCHED_SWEEP = {"name": "matched", "search": {"mode": "matched_rate",
                                               "matched_rate": {"targets": [10.0], "tolerance": 0.1}}}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(tracking URI, storage folder): experiments ``slopes`` (fixed beta, 40 runs), ``matched``
    (a matched-rate sweep, 13 runs) and ``empty``."""
    storage = tmp_path_factory.mktemp("claims_store")
    uri = tracking_uri_for(storage, None)
    log_sweep(uri, "slopes", "slopes", rd_runs(np.random.default_rng(12)))
    log_sweep(uri, "matched", "matched", matched_runs(np.random.default_rng(3)), sweep_yaml=MATCHED_SWEEP)
    log_sweep(uri, "verdicts", "verdicts", verdict_runs(np.random.default_rng(21)))
    get_or_create_experiment(make_client(uri), "empty")
    yield uri, storage


def stats_t(q: float, df: float) -> float:
    from scipy import stats

    return float(stats.t.ppf(q, df))


def _one(rows: list[C.ClaimRow], claim: str, **at: float) -> C.ClaimRow:
    found = [r for r in rows if r.claim == claim and all(getattr(r, k) == v for k, v in at.items())]
    assert len(found) == 1, (claim, at, rows)
    return found[0]


# ------------------------------------------------------------------------- claim 1 from MLflow
def test_known_slopes_read_back_from_mlflow(store: tuple[str, Path]) -> None:
    uri, _ = store
    runs = collect_runs(uri, "slopes").runs
    assert len(runs) == 40 and set(runs["lambda_neural"]) == set(LAMBDAS) and set(runs["seed"]) == set(SEEDS)
    rows = C.compute_claims(runs)
    assert {r.group for r in rows} == {GROUP}  # the pixel-SSE runs joined the box-blur group as lambda 0
    falls = _one(rows, C.RATE_VS_LAMBDA, beta=0.5)
    assert falls.verdict == C.FALLS and falls.ci_low <= -4.0 <= falls.ci_high
    assert falls.n == 20 and falls.n_seeds == 4 and falls.reason == "" and falls.method == S.TWO_STAGE_METHOD
    assert falls.df == 4 - 1 and falls.level == 0.95 and falls.margin == C.DEFAULT_MARGINS[C.RATE_VS_LAMBDA]
    flat = _one(rows, C.RATE_VS_LAMBDA, beta=2.0)
    # no true slope, 4 seeds: the 90% interval over the seeds' slopes lies inside the default margin of 1 nat
    assert flat.verdict == C.NEGLIGIBLE and flat.ci_low <= 0.0 <= flat.ci_high
    assert -1.0 < flat.eq_low and flat.eq_high < 1.0 and flat.ci_low < flat.eq_low
    assert [r.lambda_neural for r in rows if r.claim == C.FRONTIER_SHIFT] == LAMBDAS[1:]
    assert not [r for r in rows if r.claim == C.ANISOTROPY_VS_LAMBDA]  # no run has a rate target


def test_two_stage_interval_is_the_t_interval_of_the_seeds_own_slopes() -> None:
    import statsmodels.formula.api as smf
    from scipy import stats

    rng = np.random.default_rng(0)
    x = np.tile(LAMBDAS, 4)
    seed = np.repeat(SEEDS, len(LAMBDAS))
    y = 3.0 - 4.0 * x + rng.normal(0, 2.0, 4)[seed] + rng.normal(0, 1.0, 4)[seed] * x + rng.normal(0, NOISE, len(x))
    estimate = S.fit_slope(x, y, list(seed))
    own = [stats.linregress(x[seed == s], y[seed == s]).slope for s in SEEDS]
    reference = stats.ttest_1samp(own, 0.0)
    assert estimate.method == S.TWO_STAGE_METHOD and estimate.df == 4 - 1 == reference.df
    assert estimate.value == pytest.approx(np.mean(own)) and estimate.se == pytest.approx(stats.sem(own))
    assert estimate.interval(0.05) == pytest.approx(tuple(reference.confidence_interval(0.95)))
    # balanced (every seed at the same lambdas): the point estimate is the seed-blocked OLS slope, kept as a
    # diagnostic beside it (seed as strings: a categorical in the formula, as C(seed) would make it)
    blocked = smf.ols("y ~ x + seed", data=pd.DataFrame({"x": x, "y": y, "seed": [f"s{s}" for s in seed]})).fit()
    assert estimate.value == pytest.approx(blocked.params["x"])
    assert estimate.blocked_se == pytest.approx(blocked.bse["x"]) and estimate.blocked_df == blocked.df_resid
    assert 0.5 < estimate.icc <= 1.0  # an offset of sd 2 against a residual of 0.5: the seeds hold most of it
    # the seeds' own slopes spread by sd 1: net of the residual noise, the estimate of that spread
    assert 0.2 < estimate.seed_slope_sd < 3.0
    # seeds never shared across lambda: the pooled fit, as scipy's linregress
    alone = S.fit_slope(x, y, [f"{s}-{v}" for s, v in zip(seed, x, strict=True)])
    fit = stats.linregress(x, y)
    assert alone.method == S.POOLED_METHOD and alone.value == pytest.approx(fit.slope)
    assert alone.se == pytest.approx(fit.stderr) and alone.df == len(x) - 2 and alone.icc is None
    # seeds at a single lambda say nothing about a slope: left out and counted
    extra = S.fit_slope(np.r_[x, 0.5, 0.5], np.r_[y, 9.0, 9.0], [*seed, 7, 8])
    assert extra.n_seeds == 4 and extra.seeds_left_out == 2 and extra.value == pytest.approx(estimate.value)
    # identical per-seed slopes: a zero standard error, not an interval
    exact = S.fit_slope([0, 1, 0, 1], [2, 3, 5, 6], [0, 0, 1, 1])
    assert not exact.usable and math.isnan(exact.interval(0.05)[0])
    with pytest.raises(ValueError, match="1 seed"):
        S.fit_slope([0, 1, 0, 0], [1, 2, 3, 4], [0, 0, 1, 2])


def test_a_zero_standard_error_withholds_the_row_and_seedless_runs_are_their_own_seeds() -> None:
    lam = [0.0, 0.5, 1.0] * 2
    same = pd.DataFrame({"run_id": [f"r{i}" for i in range(6)], "status": "finished", "lambda_neural": lam,
                         "beta": 0.1, "seed": [0, 0, 0, 1, 1, 1], "rate": [10.0, 9.0, 8.0, 12.0, 11.0, 10.0]})
    [row] = C.rate_vs_lambda(same, BASE)
    assert row.verdict == C.WITHHELD and "zero standard error" in row.reason and row.ci_low is None
    assert row.slope == pytest.approx(-2.0)
    # no seed recorded: each run is its own seed, never one pseudo-seed spanning every lambda
    seedless = same.assign(seed=np.nan, rate=[10.0, 9.5, 8.1, 11.0, 9.0, 8.4])
    [row] = C.rate_vs_lambda(seedless, BASE)
    assert row.method == S.POOLED_METHOD and row.n_seeds == 6 and row.df == 4


def test_verdicts_direction_equivalence_and_undecided() -> None:
    def at(value: float, se: float) -> str:
        return S.decide(S.Estimate(value, se, 10, 13, 3, S.TWO_STAGE_METHOD), margin=1.0).verdict

    assert at(-2.0, 0.5) == "down" and at(2.0, 0.5) == "up"
    assert at(0.1, 0.2) == "negligible"  # the 90% interval [-0.26, 0.46] lies inside ±1
    assert at(0.5, 1.0) == "undecided"  # crosses 0 and the margin
    estimate = S.Estimate(-0.8, 0.5, 2, 15, 3, S.TWO_STAGE_METHOD)
    undecided = S.decide(estimate, margin=0.1)
    assert undecided.verdict == "undecided" and 3 < undecided.seeds_needed <= S.MAX_PROJECTED_SEEDS
    # the projection uses the method's own df (seeds - 1) and the level of the route it names: at the
    # projected total the projected interval decides, one fewer it does not
    total = undecided.seeds_needed
    for seeds, decides in ((total, True), (total - 1, False)):
        se = 0.5 * math.sqrt(3 / seeds)
        assert (0.8 > float(stats_t(0.975, seeds - 1)) * se) == decides
    # --until-decided from 3 seeds in rounds of 2 tests its last look at 0.05 / L(T): more seeds than one look needs
    route = S.until_decided_route(3, 0.05, 2)
    assert route(9) == pytest.approx(0.05 / 4)
    assert S.seeds_to_decide(estimate, 0.1, route) > total
    assert S.decide(S.Estimate(0.0, 5.0, 1, 6, 2, S.TWO_STAGE_METHOD), margin=1e-9).seeds_needed is None
    # a look of 4 planned tests at alpha 0.0125: a wider interval than one look's
    one = S.decide(S.Estimate(-1.0, 0.4, 10, 15, 3, S.TWO_STAGE_METHOD), 1.0)
    four = S.decide(S.Estimate(-1.0, 0.4, 10, 15, 3, S.TWO_STAGE_METHOD), 1.0, S.alpha_per_look(4))
    assert four.low < one.low and four.level == pytest.approx(1 - 0.05 / 4)
    assert S.planned_looks(3, 9, 2) == 4 and S.planned_looks(3, 3, 2) == 1 and S.planned_looks(2, 5, 2) == 3


def test_95_percent_interval_covers_the_true_slope_90_to_99_percent_of_the_time() -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(200):
        frame = pd.DataFrame(rd_runs(rng, slopes={0.5: -4.0}, noise=NOISE)).assign(status="finished")
        [row] = C.rate_vs_lambda(frame, BASE)
        assert row.method == S.TWO_STAGE_METHOD
        covered += row.ci_low <= -4.0 <= row.ci_high
    assert 0.90 <= covered / 200 <= 0.99, covered


# --------------------------------------------------------------------------- frontier shift
def test_shift_of_parallel_curves_is_their_vertical_distance() -> None:
    # R_0(x) = 10 - 2x on x = log D in [-3, -1]; R_1 = R_0 - 3 on [-2.5, 0]: -3 over the overlap [-2.5, -1].
    x0, x1 = np.array([-3.0, -2.0, -1.0]), np.array([-2.5, -1.5, -0.5, 0.0])
    value, why = C.average_rate_difference(x0, 10 - 2 * x0, x1, 7 - 2 * x1)
    assert why == "" and value == pytest.approx(-3.0, abs=1e-12)


def test_shift_with_a_gap_growing_along_log_distortion() -> None:
    # R_0 = 10 - 2x on [0, 4], R_1 = 8 - x on [1, 2]: gap R_1 - R_0 = x - 2, its mean over the
    # overlap [1, 2] is (1/1) * integral_1^2 (x - 2) dx = 1.5 - 2 = -0.5. PCHIP is exact on lines.
    x0, x1 = np.array([0.0, 1.0, 2.5, 4.0]), np.array([1.0, 1.5, 2.0])
    value, _ = C.average_rate_difference(x0, 10 - 2 * x0, x1, 8 - x1)
    assert value == pytest.approx(-0.5, abs=1e-12)
    # unsorted input and a repeated distortion (its rates averaged) give the same curve
    value, _ = C.average_rate_difference(x0[::-1], (10 - 2 * x0)[::-1], [2.0, 1.0, 1.5, 1.5],
                                         [6.0, 7.0, 6.0, 7.0])
    assert value == pytest.approx(-0.5, abs=1e-12)


def test_shift_is_withheld_without_overlap_or_points() -> None:
    assert C.average_rate_difference([-3, -2], [1, 0], [-1, 0], [1, 0]) == (None, "the curves share no distortion range")
    value, why = C.average_rate_difference([-3, -2], [1, 0], [-2.5, -2.5], [1, 2])
    assert value is None and "lambda > 0 curve has 1 distinct distortion point (needs 2)" in why


def _rd_frame(points: dict[float, list[tuple[float, float]]], seeds: list[int]) -> pd.DataFrame:
    """Fixed-beta runs from {lambda: [(log MSE, rate) per beta]}, every seed identical."""
    rows = [{"run_id": f"{lam}-{i}-{s}", "status": "finished", "dataset": "xysquares", "model": "vector_vae",
             "loss": "box_blur", "pixel_loss": "sse", "lambda_neural": lam, "beta": float(i + 1), "seed": s,
             "rate": rate, "mse": math.exp(log_d), "anisotropy": 1.0}
            for lam, curve in points.items() for i, (log_d, rate) in enumerate(curve) for s in seeds]
    return pd.DataFrame(rows)


def test_shift_rows_from_runs() -> None:
    line = {0.0: [(x, 10 - 2 * x) for x in (-3.0, -2.0, -1.0)], 0.5: [(x, 7 - 2 * x) for x in (-2.5, -1.5, 0.0)],
            0.9: [(x, 5 - 2 * x) for x in (0.5, 1.0)], 1.0: [(-2.0, 3.0)]}
    rows = C.compute_claims(_rd_frame(line, seeds=[0, 1, 2]))
    down = _one(rows, C.FRONTIER_SHIFT, lambda_neural=0.5)
    # every seed shifts by exactly -3 nats: a zero standard error withholds the row, never a zero-width
    # interval with a decided verdict
    assert down.slope == pytest.approx(-3.0) and down.ci_low is None and down.ci_high is None
    assert down.verdict == C.WITHHELD and "zero standard error" in down.reason and down.n == 18 and down.n_seeds == 3
    assert down.method == S.PAIRED_METHOD and down.df == 2
    apart = _one(rows, C.FRONTIER_SHIFT, lambda_neural=0.9)
    assert apart.verdict == C.WITHHELD and apart.slope is None and "share no distortion range" in apart.reason
    assert apart.excluded == 3 and apart.n_seeds == 0
    single = _one(rows, C.FRONTIER_SHIFT, lambda_neural=1.0)
    assert single.verdict == C.WITHHELD and "1 distinct distortion point" in single.reason
    one_seed = _one(C.compute_claims(_rd_frame(line, seeds=[0])), C.FRONTIER_SHIFT, lambda_neural=0.5)
    assert one_seed.slope == pytest.approx(-3.0) and one_seed.verdict == C.INSUFFICIENT
    assert one_seed.ci_low is None and one_seed.reason == "1 seed: no interval; add seeds: search.seeds"


def test_paired_shift_cancels_each_seeds_offset_and_withholds_a_sliver_of_overlap() -> None:
    # every seed's curves are the same line shifted by -1.5 nats, each seed offset by its own amount
    rows = []
    for seed, offset in enumerate([0.0, 4.0, -3.0]):
        for lam, gap in ((0.0, 0.0), (0.5, -1.5 + 0.1 * (seed - 1))):
            for i, log_d in enumerate((-3.0, -2.0, -1.0)):
                rows.append({"run_id": f"{seed}-{lam}-{i}", "status": "finished", "dataset": "d", "model": "m",
                             "loss": "box_blur", "pixel_loss": "sse", "lambda_neural": lam, "beta": float(i + 1),
                             "seed": seed, "rate": 10 - 2 * log_d + offset + gap, "mse": math.exp(log_d)})
    frame = pd.DataFrame(rows)
    [row] = [r for r in C.compute_claims(frame) if r.claim == C.FRONTIER_SHIFT]
    assert row.slope == pytest.approx(-1.5) and row.n_seeds == 3 and row.verdict == C.SHIFTS_DOWN
    assert (row.ci_high - row.ci_low) / 2 == pytest.approx(S.stats.t.ppf(0.975, 2) * 0.1 / math.sqrt(3))
    # a curve that overlaps the lambda = 0 curve over a sliver of its span is left out, and counted
    sliver = frame.copy()
    moved = (sliver["seed"] == 2) & (sliver["lambda_neural"] == 0.5)
    sliver.loc[moved, "mse"] = np.exp(np.log(sliver.loc[moved, "mse"]) + 1.8)  # [-1.2, 0.8]: overlap 0.2 of 2
    [row] = [r for r in C.compute_claims(sliver) if r.claim == C.FRONTIER_SHIFT]
    assert row.n_seeds == 2 and row.excluded == 1 and "1 seed left out (the curves share 10%" in row.reason
    value, why = C.average_rate_difference([-3, -2, -1], [1, 0, -1], [-1.2, 0.8], [0, -1], min_overlap=0.35)
    assert value is None and "needs 35%" in why


def test_shift_needs_the_same_seeds_at_both_lambdas() -> None:
    line = {0.0: [(x, 10 - 2 * x) for x in (-3.0, -2.0)], 0.5: [(x, 9 - 2 * x) for x in (-3.0, -2.0)]}
    frame = _rd_frame(line, seeds=[0, 1])
    frame.loc[frame["lambda_neural"] == 0.5, "seed"] += 10  # other seeds at lambda 0.5
    [row] = [r for r in C.compute_claims(frame) if r.claim == C.FRONTIER_SHIFT]
    assert row.verdict == C.WITHHELD and row.reason == f"no lambda = 0 runs of this seed; {C.SAME_SEEDS}"


# -------------------------------------------------------------------------- insufficient data
def test_insufficient_data_says_what_to_add() -> None:
    quickstart = {0.0: [(-3.0, 20.0), (-2.0, 10.0)], 0.5: [(-3.0, 19.0), (-2.0, 9.5)], 0.9: [(-3.0, 19.5), (-2.0, 9.0)]}
    rows = C.compute_claims(_rd_frame(quickstart, seeds=[0]))
    for beta in (1.0, 2.0):
        row = _one(rows, C.RATE_VS_LAMBDA, beta=beta)
        assert row.verdict == C.INSUFFICIENT and row.slope is None and row.n == 3
        assert row.reason == "no replicate per lambda; add seeds: search.seeds"
    only_sse = _rd_frame({0.0: [(-3.0, 20.0), (-2.0, 10.0)]}, seeds=[0, 1, 2])
    row = _one(C.compute_claims(only_sse), C.RATE_VS_LAMBDA, beta=1.0)
    assert row.verdict == C.INSUFFICIENT and row.reason == "1 lambda value; add lambdas: search.grid.loss.lambda_neural"
    both = _one(C.compute_claims(_rd_frame({0.0: [(-3.0, 20.0)]}, seeds=[0])), C.RATE_VS_LAMBDA, beta=1.0)
    assert both.reason == ("1 lambda value; add lambdas: search.grid.loss.lambda_neural; "
                           "no replicate per lambda; add seeds: search.seeds")


# ---------------------------------------------------------------------- claim 2 (matched rate)
def test_claim_2_uses_only_runs_within_tolerance_of_their_geco_target() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for lam in (0.0, 0.5, 1.0):
        for seed in (0, 1, 2):
            off = lam == 1.0 and seed == 0
            rows.append({"run_id": f"{lam}-{seed}", "status": "finished", "dataset": "celeba", "model": "autoencoder_kl",
                         "loss": "lpips", "pixel_loss": "sse", "lambda_neural": lam, "seed": seed, "beta": 1.0,
                         "target_rate": 20.0, "rate": 26.0 if off else 20.0 * (1 + rng.uniform(-0.03, 0.03)),
                         "mse": 0.01, "anisotropy": 50.0 if off else 4.0 - 3.0 * lam + rng.normal(0, 0.1)})
    frame = pd.DataFrame(rows)
    row = _one(C.compute_claims(frame), C.ANISOTROPY_VS_LAMBDA, target_rate=20.0)
    assert row.excluded == 1 and row.n == 8 and row.tolerance == 0.05
    assert row.verdict == C.FALLS and row.ci_low <= -3.0 <= row.ci_high
    loose = _one(C.compute_claims(frame, tolerance=0.5), C.ANISOTROPY_VS_LAMBDA, target_rate=20.0)
    assert loose.excluded == 0 and loose.n == 9
    assert not [r for r in C.compute_claims(frame) if r.claim == C.RATE_VS_LAMBDA]  # GECO runs are not fixed beta
    none_on = _one(C.compute_claims(frame, tolerance=1e-9), C.ANISOTROPY_VS_LAMBDA, target_rate=20.0)
    assert none_on.verdict == C.INSUFFICIENT and none_on.excluded == 9
    assert none_on.reason == "no run within 1e-09 (relative) of R* = 20 nats"


def test_claim_2_on_operating_points_with_the_sweeps_tolerance(store: tuple[str, Path]) -> None:
    uri, _ = store
    runs = collect_runs(uri, "matched").runs
    assert runs["operating_point"].sum() == 9 and set(runs["tolerance"]) == {0.1}
    rows = C.compute_claims(runs)
    row = _one(rows, C.ANISOTROPY_VS_LAMBDA, target_rate=10.0)
    assert row.tolerance == 0.1 and row.excluded == 2 and row.n == 7 and row.n_seeds == 3
    assert row.verdict == C.FALLS and row.ci_low <= -2.0 <= row.ci_high
    assert not [r for r in rows if r.claim != C.ANISOTROPY_VS_LAMBDA]  # search probes are no beta grid
    loose = _one(C.compute_claims(runs, tolerance=0.2), C.ANISOTROPY_VS_LAMBDA, target_rate=10.0)
    assert loose.excluded == 0 and loose.n == 9
    # the operating-points table marks its chosen runs even where their tags are missing
    untagged = runs.assign(op_target_rate=np.nan, operating_point=False)
    points = pd.DataFrame({"run_id": runs.loc[runs["operating_point"], "run_id"], "target_rate": 10.0})
    assert _one(C.compute_claims(untagged, points), C.ANISOTROPY_VS_LAMBDA, target_rate=10.0).n == 7


def test_variance_profiles_compare_runs_at_one_target_only(tmp_path: Path) -> None:
    frame = pd.DataFrame({"run_id": list("abcdef"), "status": "finished", "lambda_neural": [0, 0.5, 0, 0.5, 0, 0.5],
                          "target_rate": [4.0, 4.0, 10.0, 10.0, np.nan, np.nan],
                          "rate": [4.1, 3.0, 10.2, 9.9, 13.4, 21.8], "beta": 1.0})
    profiles = {r: np.array([1.0, 0.5, 0.1]) for r in "abcdef"}
    assert profile_targets(frame, profiles) == [4.0, 10.0]
    fixed = frame[frame["target_rate"].isna()]
    note = plot_variance_profiles(fixed, profiles, tmp_path / "d.png", "t")
    assert "not compared" in note and not (tmp_path / "d.png").exists()
    assert plot_variance_profiles(frame, profiles, tmp_path / "d.png", "t") == "" and (tmp_path / "d.png").is_file()


# ------------------------------------------------------------------------ outputs and the CLI
def test_json_has_null_never_nan_and_csv_matches(tmp_path: Path) -> None:
    rows = C.compute_claims(_rd_frame({0.0: [(-3.0, 20.0)], 0.5: [(-3.0, 19.0)]}, seeds=[0]))
    paths = T.write_claims(rows, tmp_path)
    text = paths["json"].read_text()
    assert "NaN" not in text and json.loads(text)[0]["slope"] is None
    table = pd.read_csv(paths["csv"])
    assert list(table.columns) == list(T.RECORD_COLUMNS) and len(table) == len(rows)


def test_claims_cli_text_and_json(store: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    uri, storage = store
    assert main(["claims", "--experiment", "slopes", "--storage", str(storage)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["claim", "group", "at"] and set(lines[1]) <= {"-", " "}
    falls = next(line for line in lines if "beta=0.5" in line)
    assert falls.startswith("rate vs lambda") and " falls " in falls and GROUP in falls
    assert lines[2].index("beta=0.5") == lines[0].index("at")  # aligned columns
    assert main(["claims", "--experiment", "matched", "--tracking-uri", uri, "--json", "--tolerance", "0.2"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["claim"] == C.ANISOTROPY_VS_LAMBDA and row["tolerance"] == 0.2 and row["n"] == 9


@pytest.mark.parametrize(("experiment", "args", "message"), [
    ("no-such-sweep", [], "--experiment 'no-such-sweep': no such experiment"),
    ("empty", [], "--experiment 'empty' holds no trial runs"),
    ("slopes", ["--tolerance", "5"], "--tolerance 5: give a relative tolerance between 0 and 1"),
])
def test_claims_cli_errors_are_one_line(store: tuple[str, Path], capsys: pytest.CaptureFixture[str],
                                        experiment: str, args: list[str], message: str) -> None:
    uri, _ = store
    assert main(["claims", "--experiment", experiment, "--tracking-uri", uri, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error: ") and message in err and "\n" not in err


def test_report_opens_with_the_claims_and_logs_them(store: tuple[str, Path], tmp_path: Path) -> None:
    uri, _ = store
    out = tmp_path / "report"
    page = build_report("slopes", uri, out).read_text()
    main_part = page[page.index("<main>"):]
    assert main_part.index("<section id=") == main_part.index('<section id="claims">')  # the first section
    assert page.count('<tr class="claim claim-rate_vs_lambda">') == 2
    assert 'class="verdict verdict-falls">falls<' in page
    assert 'class="verdict verdict-negligible">negligible<' in page
    assert json.loads((out / "claims.json").read_text()) == T.claims_records(C.compute_claims(collect_runs(uri, "slopes").runs))
    assert (out / "claims.csv").is_file()
    client = make_client(uri)
    [parent] = collect_runs(uri, "slopes").parent_run_ids
    assert {"claims.json", "claims.csv"} <= {f.path for f in client.list_artifacts(parent)}


def test_report_shows_each_verdict_in_headless_chromium(store: tuple[str, Path], tmp_path: Path) -> None:
    """A falls, a negligible and an undecided cell, each styled by its verdict, in a real browser."""
    from chromium_cdp import inspect_page, require_chromium

    uri, _ = store
    out = tmp_path / "report"
    index = build_report("verdicts", uri, out, log_to_mlflow=False)
    claims = json.loads((out / "claims.json").read_text())
    slopes = {c["beta"]: c["verdict"] for c in claims if c["claim"] == C.RATE_VS_LAMBDA}
    assert slopes == {0.5: C.FALLS, 1.0: C.UNDECIDED, 2.0: C.NEGLIGIBLE}
    binary = require_chromium()
    page = inspect_page(binary, index.resolve().as_uri(), tmp_path / "profile", screenshot=tmp_path / "v.png")
    assert page.errors == []
    cells = {v["text"]: v for v in page.verdicts}
    assert {C.FALLS, C.NEGLIGIBLE, C.UNDECIDED} <= set(cells)
    for verdict in (C.FALLS, C.NEGLIGIBLE, C.UNDECIDED):
        assert cells[verdict]["className"] == "verdict verdict-" + "-".join(verdict.split())
        assert cells[verdict]["height"] > 0
    # report.css gives each its own colour: green falls, blue negligible, amber undecided
    assert len({cells[v]["color"] for v in (C.FALLS, C.NEGLIGIBLE, C.UNDECIDED)}) == 3
    assert cells[C.NEGLIGIBLE]["color"] == "rgb(23, 78, 166)" and cells[C.UNDECIDED]["color"] == "rgb(91, 74, 0)"
