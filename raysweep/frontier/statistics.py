"""The claims' statistics: two-stage slopes over seeds, paired frontier shifts, and verdicts that decide.

Pure functions of arrays; :mod:`raysweep.frontier.claims` applies them to a sweep's runs.

**The claim is about the method, not the seeds that ran.** A run's seed fixes its initial weights,
batch order and noise (common random numbers), so runs that share a seed share a seed offset, and
each seed also has its own slope (a seed x lambda interaction: in a 3-seed quickstart the per-seed
slopes of rate on lambda were +0.3, +6.9 and -1.8 nats per unit lambda). The estimand is the mean
slope over seeds. :func:`fit_slope` therefore estimates it in two stages: per seed with at least
two lambdas, the OLS slope of the metric on lambda (the seed's offset cancels inside it); the
estimate is their mean and the interval a t over the per-seed slopes with seeds - 1 degrees of
freedom (method :data:`TWO_STAGE_METHOD`). The spread of the per-seed slopes holds both the
residual noise and the seed x lambda interaction, so the interval covers the mean slope whatever
the interaction (simulated: 93-97% at 3, 5 and 9 seeds with per-seed slopes of sd 0, 0.5, 1 and 2).
In a balanced sweep (every seed at the same lambdas) the estimate equals the seed-blocked OLS
slope. A seed at a single lambda says nothing about a slope and is left out (counted). Where no
seed ran at two lambdas at all, the seed cannot be told from the slope and the fit falls back to
the pooled model (``y ~ lambda``, n - 2 degrees of freedom, method :data:`POOLED_METHOD`).

The seed-blocked fit (statsmodels OLS with one dummy per seed, n - seeds - 1 df) is kept as a
diagnostic only: its interval is conditional on these seeds (with per-seed slopes of sd 1 it covers
the mean slope 81% of the time and reads a false direction at a true 0 in 19%, at any seed count).
From it come:

- ``icc``: the share of the pooled model's residual variance the seeds held (ANOVA estimator,
  ``s_b^2 / (s_b^2 + s_w^2)``, ``s_w^2`` the blocked residual mean square, ``s_b^2 = (MS_seed -
  s_w^2) / n_0``, floored at 0).
- ``interaction_p``: the F test of seed-specific slopes against one common slope.
- ``seed_slope_sd``: the sd of the seeds' own slopes net of residual noise,
  ``sqrt(max(0, var(b_s) - mean(s_w^2 / Sxx_s)))`` with ``s_w^2`` the residual mean square of the
  model with a slope per seed (where it has degrees of freedom).
- ``pooled_se``: the standard error a design giving every run its own seed would have at these
  lambdas, ``sqrt((s_b^2 + s_w^2) / Sxx)``; :func:`pooled_seeds_for_width` projects the seeds that
  design needs for an interval as narrow as the row's (what sharing seeds bought).

**Frontier shift over seeds, paired.** :func:`paired_interval` takes one shift per seed (that
seed's lambda curve against the same seed's lambda = 0 curve) and gives the t interval of their
mean with seeds - 1 degrees of freedom: the same two-stage shape.

**Verdicts.** :func:`decide` reads a (1 - alpha) two-sided interval for direction (``down`` /
``up`` when it excludes 0) and, failing that, the (1 - 2 alpha) interval for equivalence
(``negligible`` when it lies inside +/- margin: two one-sided tests, TOST, each at level alpha);
else ``undecided``, with the seeds a decision is projected to need (:func:`seeds_to_decide`, at
the method's own degrees of freedom and the level the suggested route tests at). An estimate
whose standard error is zero or not finite decides nothing (:attr:`Estimate.usable`).

**Looks.** A sweep that adds seeds in rounds until every claim is decided looks at its data
several times. :func:`alpha_per_look` spends a false-verdict budget evenly over the planned looks
(Bonferroni): by the union bound the chance that any look gives a false direction (or a false
"negligible") is at most the sum of the levels of the looks taken, whatever the correlation
between looks. ``benchmarks/claims_coverage.py`` measures the rate it achieves.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

ALPHA = 0.05  # the false-verdict rate of one look: 95% intervals for direction, 90% for equivalence
TWO_STAGE_METHOD = "two-stage: OLS slope per seed, t over the seeds' slopes with seeds - 1 df"
POOLED_METHOD = "pooled OLS, t with n - 2 df (no seed at two lambdas: seeds not shared, so not blocked)"
PAIRED_METHOD = "paired over seeds (each seed against its own lambda = 0 curve), t with seeds - 1 df"
BLOCKED_METHOD = "seed-blocked OLS (seed fixed effect), t with n - seeds - 1 df: conditional on these seeds"
INTERACTION_ALPHA = 0.05
MAX_PROJECTED_SEEDS = 100  # past this, "undecided" says "more than" rather than a number


class Direction(StrEnum):
    """What one interval decides (:func:`decide`); the claims name them per claim (falls / shifts down...)."""

    DOWN = "down"
    UP = "up"
    NEGLIGIBLE = "negligible"
    UNDECIDED = "undecided"


@dataclass
class Estimate:
    """A slope or shift with its standard error and degrees of freedom (from which every interval
    and verdict follows), and the diagnostics of the fit.

    Attributes:
        value: the estimate, in the claim's unit. se: its standard error. df: t degrees of freedom.
        n: observations used. n_seeds: seeds whose slopes (or shifts) it averages; for a pooled fit,
            the distinct seeds among the runs.
        method: how it was estimated (:data:`TWO_STAGE_METHOD`, :data:`POOLED_METHOD`,
            :data:`PAIRED_METHOD`).
        seeds_left_out: seeds at a single lambda, which say nothing about a slope.
        icc, interaction_p, seed_slope_sd, pooled_se: the seed-blocked diagnostics (module
            docstring); None where not estimable.
        blocked_se, blocked_df: the seed-blocked (conditional) slope's standard error and df, for
            comparison with the method's.
    """

    value: float
    se: float
    df: float
    n: int
    n_seeds: int
    method: str
    seeds_left_out: int = 0
    icc: float | None = None
    interaction_p: float | None = None
    seed_slope_sd: float | None = None
    pooled_se: float | None = None
    blocked_se: float | None = None
    blocked_df: float | None = None

    @property
    def usable(self) -> bool:
        """Whether it can carry an interval: a finite value and a finite, positive standard error."""
        return math.isfinite(self.value) and math.isfinite(self.se) and self.se > 0 and self.df >= 1

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided (1 - alpha) t interval (NaN bounds when not :attr:`usable`)."""
        if not self.usable:
            return math.nan, math.nan
        half = float(stats.t.ppf(1.0 - alpha / 2.0, self.df)) * self.se
        return self.value - half, self.value + half

    def df_at(self, seeds: int) -> float:
        """The degrees of freedom this method would have with `seeds` seeds of runs like these:
        seeds - 1 for the two-stage and paired methods, runs - 2 for the pooled fit."""
        if self.method == POOLED_METHOD:
            return self.n / max(self.n_seeds, 1) * seeds - 2.0
        return float(seeds - 1)


def _seed_codes(seeds: Sequence[object]) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(list(seeds), dtype=object), sort=True)
    return codes, len(uniques)


def _ols(y: np.ndarray, design: np.ndarray) -> sm.regression.linear_model.RegressionResultsWrapper:
    return sm.OLS(y, design).fit()


def per_seed_slopes(x: np.ndarray, y: np.ndarray, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(slope, Sxx, residual sum of squares) of each of `k` seeds' own OLS fit of `y` on `x`
    (NaN slope for a seed at a single `x`); closed form, vectorised over seeds."""
    count = np.bincount(codes, minlength=k).astype(float)
    x_mean = np.bincount(codes, weights=x, minlength=k) / np.maximum(count, 1)
    y_mean = np.bincount(codes, weights=y, minlength=k) / np.maximum(count, 1)
    dx, dy = x - x_mean[codes], y - y_mean[codes]
    sxx = np.bincount(codes, weights=dx * dx, minlength=k)
    sxy = np.bincount(codes, weights=dx * dy, minlength=k)
    syy = np.bincount(codes, weights=dy * dy, minlength=k)
    tiny = 1e-12 * np.maximum(np.bincount(codes, weights=x * x, minlength=k), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = np.where(sxx > tiny, sxy / sxx, np.nan)
        ssr = np.where(sxx > tiny, np.maximum(syy - sxy * slope, 0.0), np.nan)
    return slope, sxx, ssr


def fit_slope(x: Sequence[float], y: Sequence[float], seeds: Sequence[object] | None = None,
              diagnostics: bool = True) -> Estimate:
    """The mean slope over seeds of `y` on `x` (module docstring): two-stage where some seeds ran
    at two values of `x` or more, else pooled. `seeds` None: every run its own seed.
    `diagnostics`: also fit the seed-blocked model (icc, interaction, pooled_se); the simulations
    leave it off for speed.

    Raises:
        ValueError: one seed only with two values of `x` (no spread over seeds to take), or too
            few runs for any degree of freedom.
    """
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x_arr)
    codes, k = _seed_codes(seeds if seeds is not None else range(n))
    slopes, sxx, ssr = per_seed_slopes(x_arr, y_arr, codes, k)
    sloped = np.isfinite(slopes)
    m = int(sloped.sum())
    if m == 0:
        if n < 3:
            raise ValueError(f"{n} runs leave no degree of freedom")
        fit = _ols(y_arr, np.column_stack([np.ones(n), x_arr]))
        return Estimate(float(fit.params[1]), _se(fit, 1), float(fit.df_resid), n, k, POOLED_METHOD)
    if m == 1:
        raise ValueError("1 seed ran at two lambdas or more: a slope over seeds needs 2")
    used = sloped[codes]
    own = slopes[sloped]
    estimate = Estimate(float(own.mean()), float(own.std(ddof=1) / math.sqrt(m)), float(m - 1), int(used.sum()), m,
                        TWO_STAGE_METHOD, seeds_left_out=k - m)
    full_df = estimate.n - 2 * m
    if full_df >= 1:
        within = float(ssr[sloped].sum() / full_df)
        estimate.seed_slope_sd = math.sqrt(max(0.0, float(own.var(ddof=1)) - float(np.mean(within / sxx[sloped]))))
    if diagnostics:
        _blocked_diagnostics(estimate, x_arr[used], y_arr[used], pd.factorize(codes[used])[0], m)
    return estimate


def _blocked_diagnostics(estimate: Estimate, x: np.ndarray, y: np.ndarray, codes: np.ndarray, k: int) -> None:
    """Fill the seed-blocked diagnostics of `estimate` (module docstring) from its runs."""
    n = len(x)
    df = n - k - 1
    if df < 1:
        return
    dummies = np.eye(k)[codes]
    blocked = _ols(y, np.column_stack([x, dummies]))
    estimate.blocked_se, estimate.blocked_df = _se(blocked, 0), float(df)
    components = _variance_components(_ols(y, np.column_stack([np.ones(n), x])).ssr, blocked.ssr, codes, k, df)
    if components is not None:
        between, within = components
        total = between + within
        estimate.icc = float(between / total) if total > 0 else 0.0
        spread = float(((x - x.mean()) ** 2).sum())
        estimate.pooled_se = math.sqrt(total / spread) if spread > 0 else None
    full = _ols(y, np.column_stack([dummies, dummies * x[:, None]]))
    if full.df_resid >= 1 and full.ssr > 0:
        _f, p, _df = full.compare_f_test(blocked)
        estimate.interaction_p = float(p)


def _se(fit: object, index: int) -> float:
    return float(fit.bse[index])  # type: ignore[attr-defined]  # an exact fit gives 0 or nan: not usable


def _variance_components(ssr_pooled: float, ssr_blocked: float, codes: np.ndarray, k: int,
                         df: int) -> tuple[float, float] | None:
    """(s_b^2, s_w^2): the ANOVA variance components of seed and residual (module docstring); None
    without 2 seeds."""
    if k < 2:
        return None
    counts = np.bincount(codes, minlength=k).astype(float)
    n = counts.sum()
    n0 = (n - (counts**2).sum() / n) / (k - 1)
    ms_seed = max(ssr_pooled - ssr_blocked, 0.0) / (k - 1)
    ms_within = ssr_blocked / df
    return max((ms_seed - ms_within) / n0, 0.0), ms_within


def paired_interval(shifts: Sequence[float]) -> Estimate:
    """The mean of per-seed shifts with its t standard error (n_seeds - 1 df); needs 2 seeds."""
    values = np.asarray(shifts, dtype=float)
    k = len(values)
    if k < 2:
        raise ValueError("a paired interval needs 2 seeds")
    se = float(np.std(values, ddof=1) / math.sqrt(k))
    return Estimate(float(values.mean()), se, float(k - 1), k, k, PAIRED_METHOD)


# ------------------------------------------------------------------------------------ verdicts
def alpha_per_look(looks: int, alpha: float = ALPHA) -> float:
    """The false-verdict rate each of `looks` planned looks may spend (Bonferroni; module docstring)."""
    return alpha / max(int(looks), 1)


@dataclass
class Decision:
    """What an estimate decides at one look.

    Attributes:
        verdict: a :class:`Direction`.
        low, high: the two-sided (1 - alpha) interval. eq_low, eq_high: the (1 - 2 alpha)
            interval of the equivalence test. level: 1 - alpha.
        seeds_needed: for ``undecided``, the total seeds a decision is projected to need (None
            when more than :data:`MAX_PROJECTED_SEEDS`).
    """

    verdict: Direction
    low: float
    high: float
    eq_low: float
    eq_high: float
    level: float
    seeds_needed: int | None = None


#: How a projection plans its looks: total seeds -> (looks, level of the last look).
LookPlan = Callable[[int], float]


def decide(estimate: Estimate, margin: float, alpha: float = ALPHA, route: LookPlan | None = None) -> Decision:
    """Direction when the (1 - alpha) interval excludes 0; ``negligible`` when the (1 - 2 alpha)
    interval lies inside (-margin, margin); else ``undecided`` (with the projected seeds, at the
    level `route` gives each total: default `alpha`). Needs a :attr:`Estimate.usable` estimate."""
    if not estimate.usable:
        raise ValueError(f"standard error {estimate.se!r}: no interval to decide on")
    low, high = estimate.interval(alpha)
    eq_low, eq_high = estimate.interval(2 * alpha)
    decision = Decision(Direction.UNDECIDED, low, high, eq_low, eq_high, 1.0 - alpha)
    if high < 0:
        decision.verdict = Direction.DOWN
    elif low > 0:
        decision.verdict = Direction.UP
    elif -margin < eq_low and eq_high < margin:
        decision.verdict = Direction.NEGLIGIBLE
    else:
        decision.seeds_needed = seeds_to_decide(estimate, margin, route or (lambda _total: alpha))
    return decision


def until_decided_route(seeds_now: int, budget_alpha: float = ALPHA, seeds_per_round: int = 2) -> LookPlan:
    """The level of the last look of ``raysweep extend --until-decided --max-seeds T`` from
    `seeds_now` seeds, as a function of T: `budget_alpha` over its planned looks
    (:func:`planned_looks`), so a projection is made at the level that route will test at."""
    return lambda total: alpha_per_look(planned_looks(seeds_now, total, seeds_per_round), budget_alpha)


def seeds_to_decide(estimate: Estimate, margin: float, route: LookPlan | float = ALPHA,
                    limit: int = MAX_PROJECTED_SEEDS) -> int | None:
    """The smallest total number of seeds at which the interval is projected to decide.

    The projection keeps the estimate and the spread per seed as measured: the standard error
    shrinks as sqrt(n_seeds / total), the degrees of freedom are the method's at that total
    (:meth:`Estimate.df_at`), and the level is `route`'s for that total (a fixed alpha, or
    :func:`until_decided_route`). A planning figure, not a promise: the estimate moves as seeds are
    added. None past `limit`.
    """
    level = route if callable(route) else (lambda _total, a=float(route): a)
    k = max(estimate.n_seeds, 1)
    totals = np.arange(k + 1, limit + 1)
    df = np.array([estimate.df_at(int(t)) for t in totals])
    alpha = np.array([level(int(t)) for t in totals])
    se = estimate.se * np.sqrt(k / totals)
    ok = df >= 1
    with np.errstate(invalid="ignore"):
        half = stats.t.ppf(1.0 - alpha / 2.0, np.where(ok, df, 1.0)) * se
        half_eq = stats.t.ppf(1.0 - alpha, np.where(ok, df, 1.0)) * se
    decides = ok & ((abs(estimate.value) > half) | (abs(estimate.value) + half_eq < margin))
    return int(totals[decides][0]) if decides.any() else None


def pooled_seeds_for_width(estimate: Estimate, alpha: float = ALPHA,
                           limit: int = MAX_PROJECTED_SEEDS) -> int | None:
    """The fewest seeds at which a pooled design (every run its own seed, as many runs per seed as
    here) is projected to give a (1 - alpha) interval no wider than `estimate`'s.

    The projection starts from :attr:`Estimate.pooled_se` (the standard error of that design at
    these runs, module docstring): it shrinks as sqrt(n_seeds / seeds') and the residual degrees
    of freedom are runs' - 2. It can come out below ``n_seeds`` where the seeds held nothing.
    None without the components (pooled fits, one seed), or past `limit`.
    """
    if estimate.pooled_se is None or not estimate.usable:
        return None
    k = estimate.n_seeds
    runs_per_seed = estimate.n / k
    target = float(stats.t.ppf(1.0 - alpha / 2.0, estimate.df)) * estimate.se
    for total in range(1, limit + 1):
        df = runs_per_seed * total - 2.0
        if df < 1:
            continue
        half = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * estimate.pooled_se * math.sqrt(k / total)
        if half <= target:
            return total
    return None


def planned_looks(initial_seeds: int, max_seeds: int, seeds_per_round: int) -> int:
    """Looks of a sequential sweep: one at its first seeds, then one per round up to `max_seeds`."""
    if max_seeds <= initial_seeds:
        return 1
    return 1 + math.ceil((max_seeds - initial_seeds) / max(seeds_per_round, 1))
