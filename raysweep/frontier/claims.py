"""The paper's two claims as statistics over a sweep's runs, each with an interval and a verdict that decides.

Pure functions over the runs table of :func:`raysweep.frontier.collect.runs_frame` (and the
operating-points table, when there is one); no MLflow in here; the statistics themselves are in
:mod:`raysweep.frontier.statistics`. Per group (dataset x model x neural loss x pixel loss, the
``none`` runs joining each neural group as lambda = 0, see :mod:`raysweep.frontier.selection`):

- **Claim 1, rate vs lambda at fixed beta** (``rate_vs_lambda``, one row per beta): the slope of
  the final rate (nats) against lambda over the finished fixed-beta runs, with seeds as blocks
  (seed fixed effect, t interval with n - n_seeds - 1 df; pooled OLS only where no seed ran at
  two lambdas). Unit: nats per unit lambda.
- **Frontier shift** (``frontier_shift``, one row per lambda > 0): per seed, the average rate
  difference (nats) of that seed's rate-distortion curve at this lambda to the same seed's
  lambda = 0 curve at equal distortion over their common distortion range (Bjontegaard style):
  each curve is the seed's (rate, MSE per pixel) point per beta, rate interpolated against log MSE
  by PCHIP (``scipy.interpolate.PchipInterpolator``), the difference integrated over the overlap
  and divided by its width. A seed whose two curves overlap over less than :data:`MIN_OVERLAP` of
  the narrower curve's span is left out (with the count in the reason). The row is the mean over
  seeds with a paired t interval (n_seeds - 1 df). Negative: less rate at equal distortion, the
  frontier shifts down.
- **Claim 2, anisotropy vs lambda at matched rate** (``anisotropy_vs_lambda``, one row per rate
  target R*): the seed-blocked slope of mean per-sample anisotropy (Var_j log sigma^2_j) against
  lambda over the runs within the tolerance of their target (GECO runs and matched-rate operating
  points); off-target runs are left out and counted.

A verdict is read off the intervals as measured (:func:`raysweep.frontier.statistics.decide`):
``falls`` / ``rises`` (``shifts down`` / ``shifts up``) when the (1 - alpha) interval excludes 0;
``negligible`` when the (1 - 2 alpha) interval lies inside +/- the claim's margin (two one-sided
tests); else ``undecided``, with the seeds a decision is projected to need. alpha is 0.05 at one
look and 0.05 / L for a sweep that plans L looks (``raysweep extend --until-decided``). With fewer
than 2 lambdas or no replicate, ``insufficient data`` and what to add; a shift that cannot be
computed is ``withheld`` with the reason.

:mod:`raysweep.frontier.claims_table` turns the rows into JSON, CSV, text and markdown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.interpolate import PchipInterpolator

from raysweep.frontier import statistics as S
from raysweep.frontier.selection import (
    fixed_beta_runs,
    group_key,
    groups,
    matched_runs,
    with_operating_points,
)

RATE_VS_LAMBDA, FRONTIER_SHIFT, ANISOTROPY_VS_LAMBDA = "rate_vs_lambda", "frontier_shift", "anisotropy_vs_lambda"
CLAIMS = (RATE_VS_LAMBDA, FRONTIER_SHIFT, ANISOTROPY_VS_LAMBDA)
FALLS, RISES, NEGLIGIBLE, UNDECIDED = "falls", "rises", "negligible", "undecided"
SHIFTS_DOWN, SHIFTS_UP = "shifts down", "shifts up"
INSUFFICIENT, WITHHELD = "insufficient data", "withheld"
VERDICTS = (FALLS, RISES, NEGLIGIBLE, UNDECIDED, SHIFTS_DOWN, SHIFTS_UP, INSUFFICIENT, WITHHELD)
#: The verdicts that decide a row (what ``--until-decided`` waits for).
DECIDED = (FALLS, RISES, NEGLIGIBLE, SHIFTS_DOWN, SHIFTS_UP)
#: Default equivalence margins, in each claim's unit (README "Claims"; ``search.claims.margin.<claim>``):
#: a rate slope smaller than 1 nat per unit lambda moves the rate by under 1 nat per image across the
#: whole lambda range (the paper's effects are tens of nats); a frontier within 1 nat of the lambda = 0
#: curve on average; an anisotropy slope under 0.1 per unit lambda (Var_j log sigma^2 is unitless;
#: the paper's anisotropies are of order 1 to 10).
DEFAULT_MARGINS: dict[str, float] = {RATE_VS_LAMBDA: 1.0, FRONTIER_SHIFT: 1.0, ANISOTROPY_VS_LAMBDA: 0.1}
#: The fraction of the narrower curve's log-distortion span two curves of one seed must share for
#: their shift to count. Measured (benchmarks/claims_coverage.py, a convex frontier with a constant
#: gap, 3 seeds, 400 draws): the paired interval covers 94-96% at every overlap from 79% down to 11%
#: of the span, so coverage does not set this floor. What it guards is meaning: a gap averaged over a
#: sliver of the range says little about where the frontier lies, and a gap that varies along the
#: curve makes seeds with different slivers estimate different things. A third of the span is the
#: stated choice.
MIN_OVERLAP = 0.35
ADD_LAMBDAS = "add lambdas: search.grid.loss.lambda_neural"
ADD_SEEDS = "add seeds: search.seeds"
ADD_BETAS = "add betas: search.grid.objective.beta"
SAME_SEEDS = "run the same seeds at lambda 0 and this lambda (search.seeds)"
_DIRECTIONS = {RATE_VS_LAMBDA: (FALLS, RISES), ANISOTROPY_VS_LAMBDA: (FALLS, RISES),
               FRONTIER_SHIFT: (SHIFTS_DOWN, SHIFTS_UP)}


@dataclass
class ClaimSettings:
    """How the claims are decided.

    Attributes:
        margins: equivalence margin per claim, in its unit (defaults :data:`DEFAULT_MARGINS`).
        looks: the looks the sweep plans (1 for a sweep read once; L for ``--until-decided``);
            each look tests at ``alpha / looks``.
        alpha: the false-verdict rate over all looks.
    """

    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    looks: int = 1
    alpha: float = S.ALPHA

    @property
    def alpha_look(self) -> float:
        return S.alpha_per_look(self.looks, self.alpha)


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
        se, df: its standard error and t degrees of freedom.
        ci_low, ci_high: its two-sided interval at ``level`` (None when there is none).
        eq_low, eq_high: the (1 - 2 alpha) interval of the equivalence test. margin: the margin.
        level: 1 - alpha of this look (0.95 at one look). looks: the looks the sweep plans.
        verdict: see the module docstring. n: runs used. n_seeds: distinct seeds among them (for
            the shift: seeds paired). seeds_needed: for ``undecided``, the seeds in all a decision
            is projected to need (None: more than 100, or not undecided).
        icc: share of the residual variance the seeds held (blocked slopes). interaction_p: p of
            the seed x lambda interaction. seed_slope_sd: sd of the per-seed slopes.
        pooled_seeds: blocked slopes: the seeds a design giving every run its own seed is
            projected to need for an interval this narrow
            (:func:`raysweep.frontier.statistics.pooled_seeds_for_width`; None past 100).
        excluded: runs left out as off target (claim 2), or seeds left out for too little overlap
            (shift). tolerance: the relative rate tolerance (claim 2).
        reason: why the verdict is not decided, and notes (else empty). method: how the interval was made.
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
    se: float | None = None
    df: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    eq_low: float | None = None
    eq_high: float | None = None
    margin: float | None = None
    level: float | None = None
    looks: int = 1
    verdict: str = INSUFFICIENT
    n: int = 0
    n_seeds: int = 0
    seeds_needed: int | None = None
    icc: float | None = None
    interaction_p: float | None = None
    seed_slope_sd: float | None = None
    pooled_seeds: int | None = None
    excluded: int = 0
    tolerance: float | None = None
    reason: str = ""
    method: str = ""


def _note(row: ClaimRow, text: str) -> None:
    row.reason = f"{row.reason}; {text}" if row.reason else text


def _decide(row: ClaimRow, estimate: S.Estimate, settings: ClaimSettings) -> None:
    """Fill the row's numbers and verdict from `estimate` at this look's alpha."""
    margin = settings.margins.get(row.claim, DEFAULT_MARGINS[row.claim])
    decision = S.decide(estimate, margin, settings.alpha_look)
    down, up = _DIRECTIONS[row.claim]
    row.slope, row.se, row.df = estimate.value, estimate.se, estimate.df
    row.ci_low, row.ci_high, row.eq_low, row.eq_high = decision.low, decision.high, decision.eq_low, decision.eq_high
    row.margin, row.level, row.looks = margin, decision.level, settings.looks
    row.method, row.icc, row.interaction_p = estimate.method, estimate.icc, estimate.interaction_p
    row.seed_slope_sd = estimate.seed_slope_sd
    row.pooled_seeds = S.pooled_seeds_for_width(estimate, settings.alpha_look)
    row.verdict = {"down": down, "up": up, "negligible": NEGLIGIBLE, "undecided": UNDECIDED}[decision.verdict]
    if row.verdict == UNDECIDED:
        row.seeds_needed = decision.seeds_needed
        if decision.seeds_needed is None:
            _note(row, f"undecided: more than {S.MAX_PROJECTED_SEEDS} seeds projected (the effect is close to the "
                       f"margin ±{margin:g}); widen the margin or {ADD_SEEDS}")
        else:
            more = decision.seeds_needed - row.n_seeds
            _note(row, f"undecided: about {more} more seed{'s' * (more != 1)} ({decision.seeds_needed} in all) projected "
                       f"to decide; {ADD_SEEDS} or raysweep extend --until-decided")
    if estimate.interaction_p is not None and estimate.interaction_p < S.INTERACTION_ALPHA:
        _note(row, f"seed x lambda interaction p={estimate.interaction_p:.2g}: the slope varies by seed "
                   f"(sd {estimate.seed_slope_sd:.3g}); the interval holds for these seeds")


def _missing(x: pd.Series) -> str:
    """What a slope over lambdas `x` (one entry per run) lacks for a verdict; '' when nothing."""
    lambdas = x.nunique()
    reasons = []
    if lambdas < 2:
        reasons.append(f"{lambdas} lambda value{'s' * (lambdas != 1)}; {ADD_LAMBDAS}")
    most_runs_at_one_lambda = int(x.value_counts().max()) if len(x) else 0
    if most_runs_at_one_lambda < 2:
        reasons.append(f"no replicate per lambda; {ADD_SEEDS}")
    return "; ".join(reasons)


def _seeds(frame: pd.DataFrame) -> list | None:
    """The seed of each run (None when the runs carry none)."""
    if "seed" not in frame or frame["seed"].isna().all():
        return None
    return list(frame["seed"].fillna(-1.0))


def _slope_row(base: dict, frame: pd.DataFrame, value: str, settings: ClaimSettings, **extra: object) -> ClaimRow:
    """A claim 1 / claim 2 row: the slope of `value` against lambda over `frame` (finite values only)."""
    usable = frame[np.isfinite(frame["lambda_neural"].to_numpy(dtype=float))
                   & np.isfinite(frame[value].to_numpy(dtype=float))]
    seeds = _seeds(usable)
    row = ClaimRow(**base, **extra, n=len(usable), n_seeds=len(set(seeds)) if seeds else 0, looks=settings.looks)
    if usable.empty and row.reason:
        return row
    reason = _missing(usable["lambda_neural"])
    if reason:
        _note(row, reason)
        return row
    try:
        estimate = S.fit_slope(usable["lambda_neural"], usable[value], seeds)
    except ValueError as err:
        _note(row, f"{err}; {ADD_SEEDS}")
        return row
    _decide(row, estimate, settings)
    return row


def rate_vs_lambda(members: pd.DataFrame, base: dict, settings: ClaimSettings | None = None) -> list[ClaimRow]:
    """Claim 1 of one group: one row per beta of its finished fixed-beta runs."""
    settings = settings or ClaimSettings()
    fixed = fixed_beta_runs(members)
    fixed = fixed[np.isfinite(fixed["beta"].to_numpy(dtype=float))]
    return [_slope_row(base, at, "rate", settings, claim=RATE_VS_LAMBDA, beta=float(beta))
            for beta, at in fixed.groupby("beta", sort=True)]


def anisotropy_vs_lambda(members: pd.DataFrame, base: dict, tolerance: float | None = None,
                         settings: ClaimSettings | None = None) -> list[ClaimRow]:
    """Claim 2 of one group: one row per rate target, over its on-target runs."""
    settings = settings or ClaimSettings()
    matched = matched_runs(members, tolerance)
    rows = []
    for target, at in matched.groupby("rate_target", sort=True):
        on = at[at["on_target"]]
        off = len(at) - len(on)
        tol = float(at["tolerance_used"].max())
        note = f"no run within {tol:g} (relative) of R* = {target:g} nats" if on.empty else ""
        rows.append(_slope_row(base, on, "anisotropy", settings, claim=ANISOTROPY_VS_LAMBDA, target_rate=float(target),
                               excluded=off, tolerance=tol, reason=note))
    return rows


# ----------------------------------------------------------------------------- frontier shift
def average_rate_difference(log_d0: Sequence[float], rate0: Sequence[float], log_d1: Sequence[float],
                            rate1: Sequence[float], min_overlap: float = 0.0) -> tuple[float | None, str]:
    """The mean of R_1 - R_0 (nats) over the common range of log distortion, each curve a PCHIP
    interpolant of rate against log distortion (points sorted by log distortion, equal ones
    averaged): (integral of R_1 - R_0 d log D) / width. Returns (value, '') or (None, reason);
    None too when the common range is under `min_overlap` of the narrower curve's span."""
    curves = []
    for name, x, y in (("lambda = 0", log_d0, rate0), ("lambda > 0", log_d1, rate1)):
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
    narrower = min(curves[0][0][-1] - curves[0][0][0], curves[1][0][-1] - curves[1][0][0])
    if (high - low) < min_overlap * narrower:
        return None, (f"the curves share {100 * (high - low) / narrower:.0f}% of the narrower curve's log-distortion "
                      f"span (needs {100 * min_overlap:.0f}%)")
    areas = [PchipInterpolator(x, y).integrate(low, high) for x, y in curves]
    return float((areas[1] - areas[0]) / (high - low)), ""


def seed_curve(beta: np.ndarray, rate: np.ndarray, mse: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log MSE, rate) per beta of one seed's runs at one lambda (replicates averaged; numpy, as
    this runs once per seed, lambda and group)."""
    betas, at = np.unique(beta, return_inverse=True)
    counts = np.bincount(at, minlength=len(betas))
    return (np.log(np.bincount(at, weights=mse, minlength=len(betas)) / counts),
            np.bincount(at, weights=rate, minlength=len(betas)) / counts)


def _by_seed(runs: pd.DataFrame) -> dict[object, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """seed -> (beta, rate, MSE) arrays of its runs."""
    keys = runs["seed_key"].to_numpy()
    columns = [runs[c].to_numpy(dtype=float) for c in ("beta", "rate", "mse")]
    out = {}
    for seed in np.unique(keys):
        at = keys == seed
        out[seed] = tuple(c[at] for c in columns)
    return out


def seed_shifts(zero: pd.DataFrame, curve: pd.DataFrame,
                min_overlap: float = MIN_OVERLAP) -> tuple[dict[object, float], dict[object, str]]:
    """Per seed with at least 2 betas at both lambdas: its shift (nats), or why it has none."""
    shifts: dict[object, float] = {}
    skipped: dict[object, str] = {}
    zero_by_seed = _by_seed(zero)
    for seed, own in _by_seed(curve).items():
        base = zero_by_seed.get(seed)
        if base is None:
            skipped[seed] = "no lambda = 0 runs of this seed"
            continue
        value, why = average_rate_difference(*seed_curve(*base), *seed_curve(*own), min_overlap=min_overlap)
        if value is None:
            skipped[seed] = why
        else:
            shifts[seed] = value
    return shifts, skipped


def frontier_shift(members: pd.DataFrame, base: dict, settings: ClaimSettings | None = None,
                   min_overlap: float = MIN_OVERLAP) -> list[ClaimRow]:
    """The frontier shift of one group: one row per lambda > 0 of its finished fixed-beta runs."""
    settings = settings or ClaimSettings()
    fixed = fixed_beta_runs(members)
    fixed = fixed[np.isfinite(fixed[["rate", "mse", "beta", "lambda_neural"]].to_numpy(dtype=float)).all(axis=1)
                  & (fixed["mse"].to_numpy(dtype=float) > 0)].copy()
    fixed["seed_key"] = fixed["seed"].fillna(-1.0) if "seed" in fixed else -1.0
    zero = fixed[fixed["lambda_neural"] == 0]
    rows = []
    for lam, curve in fixed[fixed["lambda_neural"] > 0].groupby("lambda_neural", sort=True):
        row = ClaimRow(**base, claim=FRONTIER_SHIFT, lambda_neural=float(lam), looks=settings.looks,
                       method=S.PAIRED_METHOD)
        rows.append(row)
        if zero.empty:
            row.verdict, row.reason = WITHHELD, f"no lambda = 0 runs at fixed beta; {ADD_LAMBDAS}"
            continue
        shifts, skipped = seed_shifts(zero, curve, min_overlap)
        row.n_seeds, row.excluded = len(shifts), len(skipped)
        row.n = int(zero["seed_key"].isin(list(shifts)).sum() + curve["seed_key"].isin(list(shifts)).sum())
        if not shifts:
            reasons = sorted(set(skipped.values()))
            hint = SAME_SEEDS if reasons == ["no lambda = 0 runs of this seed"] else ADD_BETAS
            row.verdict, row.reason = WITHHELD, f"{'; '.join(reasons)}; {hint}"
            continue
        if skipped:
            _note(row, f"{len(skipped)} seed{'s' * (len(skipped) != 1)} left out ({sorted(set(skipped.values()))[0]})")
        if len(shifts) < 2:
            row.slope = float(next(iter(shifts.values())))
            _note(row, f"1 seed: no interval; {ADD_SEEDS}")
            continue
        _decide(row, S.paired_interval(list(shifts.values())), settings)
    return rows


# -------------------------------------------------------------------------------- all claims
def settings_from_runs(runs: pd.DataFrame, margins: Mapping[str, float] | None = None,
                       looks: int | None = None) -> ClaimSettings:
    """The claim settings: `margins` and `looks` where given, else the sweep's own
    (``search.claims``: columns ``claims_margin_<claim>`` and ``claims_looks`` of
    :func:`raysweep.frontier.collect.with_sweep_settings`), else the defaults."""
    settings = ClaimSettings()
    for claim in CLAIMS:
        column = f"claims_margin_{claim}"
        if column in runs:
            known = pd.to_numeric(runs[column], errors="coerce").dropna()
            if not known.empty:
                settings.margins[claim] = float(known.iloc[0])
    if "claims_looks" in runs:
        known = pd.to_numeric(runs["claims_looks"], errors="coerce").dropna()
        if not known.empty:
            settings.looks = int(known.max())
    settings.margins.update(margins or {})
    if looks is not None:
        settings.looks = int(looks)
    return settings


def compute_claims(runs: pd.DataFrame, points: pd.DataFrame | None = None, tolerance: float | None = None,
                   margins: Mapping[str, float] | None = None, looks: int | None = None) -> list[ClaimRow]:
    """Every claim row of a sweep's runs: per group, claim 1 per beta, the frontier shift per
    lambda > 0, claim 2 per rate target.

    Args:
        runs: the runs table (:func:`raysweep.frontier.collect.runs_frame`, with the sweep columns
            of :func:`raysweep.frontier.collect.with_sweep_settings` where known).
        points: the operating-points table (:func:`raysweep.frontier.operating_points.load_operating_points`);
            its rows mark their chosen runs as matched-rate runs at their target.
        tolerance: relative rate tolerance of claim 2; None: each sweep's
            ``search.matched_rate.tolerance``, else 0.05.
        margins: equivalence margin per claim (its unit); None: the sweep's ``search.claims.margin``,
            else :data:`DEFAULT_MARGINS`.
        looks: looks planned (alpha is spent over them); None: the sweep's ``search.claims.looks``, else 1.
    """
    if runs.empty:
        return []
    settings = settings_from_runs(runs, margins, looks)
    runs = with_operating_points(runs, points)
    rows: list[ClaimRow] = []
    for title, members in groups(runs):
        base = {"group": title, **group_key(members)}
        rows += rate_vs_lambda(members, base, settings)
        rows += frontier_shift(members, base, settings)
        rows += anisotropy_vs_lambda(members, base, tolerance, settings)
    return rows


def open_rows(rows: Sequence[ClaimRow]) -> list[ClaimRow]:
    """The rows more seeds can still decide: ``undecided``, and ``insufficient data`` for want of seeds."""
    return [r for r in rows if r.verdict == UNDECIDED or (r.verdict == INSUFFICIENT and ADD_SEEDS in r.reason)]


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
