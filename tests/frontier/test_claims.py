"""The claims' statistics against known truths: slopes with t intervals (read back from a real
SQLite MLflow store written with raysweep's tracking conventions), their coverage, the frontier
shift on curves whose average gap is known in closed form, insufficient data, off-target runs,
and the claims in the CLI, the report page, its files and the sweep's MLflow parent run."""

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
    get_or_create_experiment(make_client(uri), "empty")
    yield uri, storage


def _one(rows: list[C.ClaimRow], claim: str, **at: float) -> C.ClaimRow:
    found = [r for r in rows if r.claim == claim and all(getattr(r, k) == v for k, v in at.items())]
    assert len(found) == 1, (claim, at, rows)
    return found[0]


# ------------------------------------------------------------------------- claim 1 from MLflow
def test_known_slopes_read_back_from_mlflow(store: tuple[str, Path]) -> None:
    uri, _ = store
    runs = collect_runs(uri, "slopes").runs
    assert len(runs) == 40 and set(runs["lambda_neural"]) == set(LAMBDAS) and set(runs["seed"]) == set(SEEDS)
    rows = C.compute_claims(runs, resamples=200)
    assert {r.group for r in rows} == {GROUP}  # the pixel-SSE runs joined the box-blur group as lambda 0
    falls = _one(rows, C.RATE_VS_LAMBDA, beta=0.5)
    assert falls.verdict == C.FALLS and falls.ci_low <= -4.0 <= falls.ci_high
    assert falls.n == 20 and falls.n_seeds == 4 and falls.reason == "" and falls.method == C.OLS_METHOD
    flat = _one(rows, C.RATE_VS_LAMBDA, beta=2.0)
    assert flat.verdict == C.FLAT and flat.ci_low <= 0.0 <= flat.ci_high
    assert [r.lambda_neural for r in rows if r.claim == C.FRONTIER_SHIFT] == LAMBDAS[1:]
    assert not [r for r in rows if r.claim == C.ANISOTROPY_VS_LAMBDA]  # no run has a rate target


def test_interval_is_the_t_interval_of_the_ols_slope() -> None:
    from scipy import stats

    x = np.repeat(LAMBDAS, 4)
    y = 3.0 - 4.0 * x + np.random.default_rng(0).normal(0, NOISE, len(x))
    slope, low, high = C.slope_interval(x, y)
    fit = stats.linregress(x, y)
    assert slope == pytest.approx(fit.slope)
    assert (high - low) / 2 == pytest.approx(stats.t.ppf(0.975, len(x) - 2) * fit.stderr)
    assert C.slope_interval([0, 0, 1, 1], [2, 2, 2, 2]) == (0.0, 0.0, 0.0)  # no spread at all: exactly flat
    assert C.verdict_of(-2, -1) == C.FALLS and C.verdict_of(1, 2) == C.RISES and C.verdict_of(-1, 1) == C.FLAT


def test_95_percent_interval_covers_the_true_slope_90_to_99_percent_of_the_time() -> None:
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(200):
        frame = pd.DataFrame(rd_runs(rng, slopes={0.5: -4.0}, noise=NOISE)).assign(status="finished")
        [row] = C.rate_vs_lambda(frame, BASE)
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
    assert value is None and "this lambda curve has 1 distinct distortion point (needs 2)" in why


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
    rows = C.compute_claims(_rd_frame(line, seeds=[0, 1, 2]), resamples=100)
    down = _one(rows, C.FRONTIER_SHIFT, lambda_neural=0.5)
    assert down.slope == pytest.approx(-3.0) and down.ci_low == pytest.approx(-3.0) == down.ci_high
    assert down.verdict == C.SHIFTS_DOWN and down.n == 18 and down.n_seeds == 3
    assert down.method == "bootstrap over seeds, 100 resamples"
    apart = _one(rows, C.FRONTIER_SHIFT, lambda_neural=0.9)
    assert apart.verdict == C.WITHHELD and apart.slope is None and "share no distortion range" in apart.reason
    single = _one(rows, C.FRONTIER_SHIFT, lambda_neural=1.0)
    assert single.verdict == C.WITHHELD and "1 distinct distortion point" in single.reason
    one_seed = _one(C.compute_claims(_rd_frame(line, seeds=[0])), C.FRONTIER_SHIFT, lambda_neural=0.5)
    assert one_seed.slope == pytest.approx(-3.0) and one_seed.verdict == C.INSUFFICIENT
    assert one_seed.ci_low is None and one_seed.reason == "1 seed: no interval; add seeds: search.seeds"


def test_bootstrap_is_reproducible_and_brackets_the_shift() -> None:
    frame = pd.DataFrame(rd_runs(np.random.default_rng(5))).assign(
        status="finished", run_id=lambda f: [f"r{i}" for i in range(len(f))], dataset="xysquares",
        model="vector_vae", pixel_loss="sse")
    first = [r for r in C.compute_claims(frame, resamples=200) if r.claim == C.FRONTIER_SHIFT]
    again = [r for r in C.compute_claims(frame, resamples=200) if r.claim == C.FRONTIER_SHIFT]
    assert [(r.ci_low, r.ci_high) for r in first] == [(r.ci_low, r.ci_high) for r in again]
    assert all(r.ci_low <= r.slope <= r.ci_high for r in first)


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
    paths = C.write_claims(rows, tmp_path)
    text = paths["json"].read_text()
    assert "NaN" not in text and json.loads(text)[0]["slope"] is None
    table = pd.read_csv(paths["csv"])
    assert list(table.columns) == list(C.ClaimRow.__dataclass_fields__) and len(table) == len(rows)


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
    assert 'class="verdict verdict-no-significant-change">no significant change<' in page
    assert json.loads((out / "claims.json").read_text()) == C.claims_records(C.compute_claims(collect_runs(uri, "slopes").runs))
    assert (out / "claims.csv").is_file()
    client = make_client(uri)
    [parent] = collect_runs(uri, "slopes").parent_run_ids
    assert {"claims.json", "claims.csv"} <= {f.path for f in client.list_artifacts(parent)}
