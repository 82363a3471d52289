"""The paper's two claims as statistics over a sweep's runs, each with a 95% interval and a verdict.

Pure functions over the runs table of :func:`raysweep.frontier.collect.runs_frame` (and the
operating-points table, when there is one); no MLflow in here. Per group (dataset x model x neural
loss x pixel loss, the ``none`` runs joining each neural group as lambda = 0, see
:mod:`raysweep.frontier.selection`):

- **Claim 1, rate vs lambda at fixed beta** (``rate_vs_lambda``, one row per beta): the
  least-squares slope of the final rate (nats) against lambda over the finished fixed-beta runs,
  every seed a replicate; a 95% t interval of the OLS slope (``scipy.stats.linregress`` standard
  error, ``scipy.stats.t`` quantile, n - 2 degrees of freedom). Unit: nats per unit lambda.
- **Frontier shift** (``frontier_shift``, one row per lambda > 0): the average rate difference
  (nats) of that lambda's rate-distortion curve to the lambda = 0 curve at equal distortion over
  their common distortion range (Bjontegaard style): each curve is its seed-averaged (rate, MSE
  per pixel) point per beta, rate interpolated against log MSE by PCHIP
  (``scipy.interpolate.PchipInterpolator``), the difference integrated over the overlap and
  divided by its width. Negative: less rate at equal distortion, the frontier shifts down. The
  interval is a percentile bootstrap over seeds (:data:`RESAMPLES` resamples of the seeds with
  replacement, both curves with the same draw, fixed RNG seed :data:`RNG_SEED`).
- **Claim 2, anisotropy vs lambda at matched rate** (``anisotropy_vs_lambda``, one row per rate
  target R*): the OLS slope of mean per-sample anisotropy (Var_j log sigma^2_j) against lambda
  over the runs within the tolerance of their target (GECO runs and matched-rate operating
  points), with the same t interval; off-target runs are left out and counted.

A verdict is read off the interval as measured: ``falls`` (entirely below 0), ``rises`` (entirely
above 0), else ``no significant change`` (frontier shift: ``shifts down`` / ``shifts up``). With
fewer than 2 lambdas or no replicate, ``insufficient data`` and what to add; a shift that cannot
be computed is ``withheld`` with the reason.

:func:`claims_frame`, :func:`claims_json`, :func:`write_claims` and :func:`format_claims` turn the
rows into a DataFrame, JSON (null for missing numbers, never NaN), ``claims.json`` +
``claims.csv``, and an aligned plain-text table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.interpolate import PchipInterpolator

from raysweep.frontier.selection import (
    fixed_beta_runs,
    group_key,
    groups,
    matched_runs,
    with_operating_points,
)

RATE_VS_LAMBDA, FRONTIER_SHIFT, ANISOTROPY_VS_LAMBDA = "rate_vs_lambda", "frontier_shift", "anisotropy_vs_lambda"
FALLS, RISES, FLAT = "falls", "rises", "no significant change"
SHIFTS_DOWN, SHIFTS_UP = "shifts down", "shifts up"
INSUFFICIENT, WITHHELD = "insufficient data", "withheld"
VERDICTS = (FALLS, RISES, FLAT, SHIFTS_DOWN, SHIFTS_UP, INSUFFICIENT, WITHHELD)
LEVEL = 0.95
RESAMPLES = 1000
RNG_SEED = 0
OLS_METHOD = "OLS t interval"
ADD_LAMBDAS = "add lambdas: search.grid.loss.lambda_neural"
ADD_SEEDS = "add seeds: search.seeds"


@dataclass
class ClaimRow:
    """One line of the claims table.

    Attributes:
        claim: ``rate_vs_lambda``, ``frontier_shift`` or ``anisotropy_vs_lambda``.
        group: ``dataset / model / loss[ / pixel loss P]``; dataset, model, loss, pixel_loss: its parts.
        beta: the fixed KL weight (claim 1); lambda_neural: the curve compared to lambda 0 (shift);
            target_rate: R* in nats (claim 2). The others are None.
        slope: claim 1 in nats per unit lambda, claim 2 in anisotropy per unit lambda; for the
            shift, the average rate difference in nats. None when withheld.
        ci_low, ci_high: its 95% interval (None when there is none).
        verdict: see the module docstring. n: runs used. n_seeds: distinct seeds among them.
        excluded: runs left out as off target (claim 2). tolerance: the relative rate tolerance (claim 2).
        reason: why the verdict is ``insufficient data`` or ``withheld`` (else empty).
        method: how the interval was made.
    """

    claim: str
    group: str
    dataset: str
    model: str
    loss: str
    pixel_loss: str
    beta: float | None = None
    lambda_neural: float | None = None
    target_rate: float | None = None
    slope: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    verdict: str = INSUFFICIENT
    n: int = 0
    n_seeds: int = 0
    excluded: int = 0
    tolerance: float | None = None
    reason: str = ""
    method: str = OLS_METHOD


def slope_interval(x: Sequence[float], y: Sequence[float], level: float = LEVEL) -> tuple[float, float, float]:
    """(slope, low, high): the OLS slope of `y` on `x` and its two-sided `level` t interval
    (standard error from ``scipy.stats.linregress``, ``t.ppf`` with n - 2 degrees of freedom).
    Needs at least 3 points and 2 distinct x."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    fit = stats.linregress(x, y)
    stderr = float(fit.stderr)
    if not math.isfinite(stderr) and np.ptp(y) == 0:
        stderr = 0.0  # constant y: scipy leaves the error undefined; the slope is exactly 0, no residual
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 2)) * stderr
    return float(fit.slope), float(fit.slope) - half, float(fit.slope) + half


def verdict_of(low: float, high: float, down: str = FALLS, up: str = RISES) -> str:
    """`down` when the interval lies entirely below 0, `up` entirely above, else no significant change."""
    if high < 0:
        return down
    if low > 0:
        return up
    return FLAT


def _missing(x: pd.Series) -> str:
    """What a slope over lambdas `x` (one entry per run) lacks for a verdict; '' when nothing."""
    lambdas = x.nunique()
    reasons = []
    if lambdas < 2:
        reasons.append(f"{lambdas} lambda value{'s' * (lambdas != 1)}; {ADD_LAMBDAS}")
    most_runs_at_one_lambda = int(x.value_counts().max()) if len(x) else 0
    if most_runs_at_one_lambda < 2:
        reasons.append(f"no replicate per lambda; {ADD_SEEDS}")
    if not reasons and len(x) - 2 < 1:
        reasons.append(f"{len(x)} runs leave no degree of freedom; {ADD_SEEDS}")
    return "; ".join(reasons)


def _n_seeds(frame: pd.DataFrame) -> int:
    return int(frame["seed"].nunique()) if "seed" in frame else 0


def _slope_row(base: dict, frame: pd.DataFrame, value: str, **extra: object) -> ClaimRow:
    """A claim 1 / claim 2 row: the slope of `value` against lambda over `frame` (finite values only)."""
    usable = frame[np.isfinite(frame["lambda_neural"].to_numpy(dtype=float))
                   & np.isfinite(frame[value].to_numpy(dtype=float))]
    row = ClaimRow(**base, **extra, n=len(usable), n_seeds=_n_seeds(usable))
    if usable.empty and row.reason:
        return row
    reason = _missing(usable["lambda_neural"])
    if reason:
        row.reason = f"{row.reason}; {reason}" if row.reason else reason
        return row
    row.slope, row.ci_low, row.ci_high = slope_interval(usable["lambda_neural"], usable[value])
    row.verdict = verdict_of(row.ci_low, row.ci_high)
    return row


def rate_vs_lambda(members: pd.DataFrame, base: dict) -> list[ClaimRow]:
    """Claim 1 of one group: one row per beta of its finished fixed-beta runs."""
    fixed = fixed_beta_runs(members)
    fixed = fixed[np.isfinite(fixed["beta"].to_numpy(dtype=float))]
    return [_slope_row(base, at, "rate", claim=RATE_VS_LAMBDA, beta=float(beta))
            for beta, at in fixed.groupby("beta", sort=True)]


def anisotropy_vs_lambda(members: pd.DataFrame, base: dict, tolerance: float | None = None) -> list[ClaimRow]:
    """Claim 2 of one group: one row per rate target, over its on-target runs."""
    matched = matched_runs(members, tolerance)
    rows = []
    for target, at in matched.groupby("rate_target", sort=True):
        on = at[at["on_target"]]
        off = len(at) - len(on)
        tol = float(at["tolerance_used"].max())
        note = f"no run within {tol:g} (relative) of R* = {target:g} nats" if on.empty else ""
        row = _slope_row(base, on, "anisotropy", claim=ANISOTROPY_VS_LAMBDA, target_rate=float(target),
                         excluded=off, tolerance=tol, reason=note)
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- frontier shift
def average_rate_difference(log_d0: Sequence[float], rate0: Sequence[float], log_d1: Sequence[float],
                            rate1: Sequence[float]) -> tuple[float | None, str]:
    """The mean of R_1 - R_0 (nats) over the common range of log distortion, each curve a PCHIP
    interpolant of rate against log distortion (points sorted by log distortion, equal ones
    averaged): (integral of R_1 - R_0 d log D) / width. Returns (value, '') or (None, reason)."""
    curves = []
    for name, x, y in (("lambda = 0", log_d0, rate0), ("this lambda", log_d1, rate1)):
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        xs, where_x = np.unique(x[ok], return_inverse=True)  # sorted; equal log distortions averaged
        if len(xs) < 2:
            return None, f"the {name} curve has {len(xs)} distinct distortion point{'s' * (len(xs) != 1)} (needs 2)"
        curves.append((xs, np.bincount(where_x, weights=y[ok]) / np.bincount(where_x)))
    low = max(curves[0][0][0], curves[1][0][0])
    high = min(curves[0][0][-1], curves[1][0][-1])
    if not high > low:
        return None, "the curves share no distortion range"
    areas = [PchipInterpolator(x, y).integrate(low, high) for x, y in curves]
    return float((areas[1] - areas[0]) / (high - low)), ""


def _curve_tables(runs: pd.DataFrame, seeds: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per beta (rows) x seed (columns): summed rate, summed MSE and run counts."""
    betas = sorted(runs["beta"].unique())
    sums_rate = np.zeros((len(betas), len(seeds)))
    sums_mse, counts = np.zeros_like(sums_rate), np.zeros_like(sums_rate)
    b_index, s_index = {b: i for i, b in enumerate(betas)}, {s: j for j, s in enumerate(seeds)}
    for beta, seed, rate, mse in zip(runs["beta"], runs["seed_key"], runs["rate"], runs["mse"], strict=True):
        i, j = b_index[beta], s_index[seed]
        sums_rate[i, j] += rate
        sums_mse[i, j] += mse
        counts[i, j] += 1
    return sums_rate, sums_mse, counts


def _curve(tables: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log MSE, rate) per beta, averaged over the runs of the seeds drawn (`weights`: times drawn)."""
    sums_rate, sums_mse, counts = tables
    n = counts @ weights
    keep = n > 0
    return np.log((sums_mse @ weights)[keep] / n[keep]), (sums_rate @ weights)[keep] / n[keep]


def frontier_shift(members: pd.DataFrame, base: dict, resamples: int = RESAMPLES,
                   rng_seed: int = RNG_SEED) -> list[ClaimRow]:
    """The frontier shift of one group: one row per lambda > 0 of its finished fixed-beta runs."""
    fixed = fixed_beta_runs(members)
    fixed = fixed[np.isfinite(fixed[["rate", "mse", "beta", "lambda_neural"]].to_numpy(dtype=float)).all(axis=1)
                  & (fixed["mse"].to_numpy(dtype=float) > 0)].copy()
    fixed["seed_key"] = fixed["seed"].fillna(-1.0) if "seed" in fixed else -1.0
    zero = fixed[fixed["lambda_neural"] == 0]
    method = f"bootstrap over seeds, {resamples} resamples"
    rows = []
    for lam, curve in fixed[fixed["lambda_neural"] > 0].groupby("lambda_neural", sort=True):
        both = pd.concat([zero, curve])
        row = ClaimRow(**base, claim=FRONTIER_SHIFT, lambda_neural=float(lam), n=len(both),
                       n_seeds=int(both["seed_key"].nunique()), method=method)
        rows.append(row)
        if zero.empty:
            row.verdict, row.reason = WITHHELD, f"no lambda = 0 runs at fixed beta; {ADD_LAMBDAS}"
            continue
        seeds = sorted(both["seed_key"].unique())
        tables = [_curve_tables(zero, seeds), _curve_tables(curve, seeds)]
        ones = np.ones(len(seeds))
        row.slope, why = average_rate_difference(*_curve(tables[0], ones), *_curve(tables[1], ones))
        if row.slope is None:
            row.verdict, row.reason = WITHHELD, f"{why}; add betas: search.grid.objective.beta"
            continue
        if len(seeds) < 2:
            row.reason = f"1 seed: no interval; {ADD_SEEDS}"
            continue
        draws = np.random.default_rng(rng_seed).integers(0, len(seeds), size=(resamples, len(seeds)))
        values = []
        for draw in draws:
            weights = np.bincount(draw, minlength=len(seeds)).astype(float)
            value, _ = average_rate_difference(*_curve(tables[0], weights), *_curve(tables[1], weights))
            if value is not None:
                values.append(value)
        if len(values) < resamples // 2:
            row.reason = f"only {len(values)} of {resamples} resamples had a common distortion range; {ADD_SEEDS}"
            continue
        if len(values) < resamples:
            row.method = f"{method} ({resamples - len(values)} without a common range left out)"
        row.ci_low, row.ci_high = (float(v) for v in np.percentile(values, [2.5, 97.5]))
        row.verdict = verdict_of(row.ci_low, row.ci_high, SHIFTS_DOWN, SHIFTS_UP)
    return rows


# -------------------------------------------------------------------------------- all claims
def compute_claims(runs: pd.DataFrame, points: pd.DataFrame | None = None, tolerance: float | None = None,
                   resamples: int = RESAMPLES, rng_seed: int = RNG_SEED) -> list[ClaimRow]:
    """Every claim row of a sweep's runs: per group, claim 1 per beta, the frontier shift per
    lambda > 0, claim 2 per rate target.

    Args:
        runs: the runs table (:func:`raysweep.frontier.collect.runs_frame`, with the sweep columns
            of :func:`raysweep.frontier.collect.with_sweep_settings` where known).
        points: the operating-points table (:func:`raysweep.frontier.operating_points.load_operating_points`);
            its rows mark their chosen runs as matched-rate runs at their target.
        tolerance: relative rate tolerance of claim 2; None: each sweep's
            ``search.matched_rate.tolerance``, else 0.05.
        resamples, rng_seed: the frontier-shift bootstrap.
    """
    if runs.empty:
        return []
    runs = with_operating_points(runs, points)
    rows: list[ClaimRow] = []
    for title, members in groups(runs):
        base = {"group": title, **group_key(members)}
        rows += rate_vs_lambda(members, base)
        rows += frontier_shift(members, base, resamples, rng_seed)
        rows += anisotropy_vs_lambda(members, base, tolerance)
    return rows


def _clean(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def claims_records(rows: Sequence[ClaimRow]) -> list[dict]:
    """The rows as plain dicts, missing or non-finite numbers as None (JSON null)."""
    return [{k: _clean(v) for k, v in vars(row).items()} for row in rows]


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    """The rows as a DataFrame, one column per :class:`ClaimRow` field."""
    columns = list(ClaimRow.__dataclass_fields__)
    return pd.DataFrame(claims_records(rows), columns=columns)


def claims_json(rows: Sequence[ClaimRow]) -> str:
    """The rows as a JSON list (missing numbers null; NaN never appears)."""
    return json.dumps(claims_records(rows), indent=2, allow_nan=False)


def write_claims(rows: Sequence[ClaimRow], out_dir: str | Path) -> dict[str, Path]:
    """Write ``claims.json`` and ``claims.csv`` (missing numbers empty) into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "claims.json", "csv": out / "claims.csv"}
    paths["json"].write_text(claims_json(rows) + "\n")
    claims_frame(rows).to_csv(paths["csv"], index=False)
    return paths


CLAIM_LABELS = {RATE_VS_LAMBDA: "rate vs lambda", FRONTIER_SHIFT: "frontier shift",
                ANISOTROPY_VS_LAMBDA: "anisotropy vs lambda"}


def where(row: ClaimRow) -> str:
    """Where a row is taken: ``beta=0.5`` (claim 1), ``lambda=0.5`` (shift) or ``R*=10 nats ±0.05``
    (claim 2, with its relative rate tolerance)."""
    if row.claim == RATE_VS_LAMBDA:
        return f"beta={row.beta:g}"
    if row.claim == FRONTIER_SHIFT:
        return f"lambda={row.lambda_neural:g}"
    tolerance = f" ±{row.tolerance:.3g}" if row.tolerance is not None else ""
    return f"R*={row.target_rate:g} nats{tolerance}"


def number(value: float | None) -> str:
    """A slope, shift or bound in 4 significant digits; '' when missing."""
    return "" if value is None or not math.isfinite(value) else f"{value:.4g}"


def interval(row: ClaimRow) -> str:
    """``[low, high]``, or '' when the row has no interval."""
    if row.ci_low is None or row.ci_high is None:
        return ""
    return f"[{number(row.ci_low)}, {number(row.ci_high)}]"


TEXT_COLUMNS = ("claim", "group", "at", "slope / shift", "95% interval", "verdict", "n", "seeds", "off target",
                "reason")


def text_cells(row: ClaimRow) -> list[str]:
    """One row's cells under :data:`TEXT_COLUMNS` (``off target`` only for claim 2)."""
    off = str(row.excluded) if row.claim == ANISOTROPY_VS_LAMBDA else ""
    return [CLAIM_LABELS[row.claim], row.group, where(row), number(row.slope), interval(row), row.verdict,
            str(row.n), str(row.n_seeds), off, row.reason]


def format_claims(rows: Sequence[ClaimRow]) -> str:
    """The rows as a plain-text table with aligned columns, and what the units and intervals are."""
    if not rows:
        return "no claims: the experiment has no finished runs"
    table = [list(TEXT_COLUMNS)] + [text_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(TEXT_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", "slope: rate vs lambda in nats per unit lambda (fixed beta), anisotropy vs lambda per unit lambda "
              "(runs within the rate tolerance of R*);",
              "frontier shift: mean rate difference in nats to the lambda = 0 curve at equal per-pixel MSE "
              "(PCHIP of rate on log MSE, common range);",
              f"intervals: 95%; slopes: {OLS_METHOD}, seeds as replicates; shifts: "
              + ("; ".join(sorted({r.method for r in rows if r.claim == FRONTIER_SHIFT})) or "bootstrap over seeds")
              + "."]
    return "\n".join(lines)
