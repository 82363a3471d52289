"""The claims' statistics: seed-blocked slopes, paired frontier shifts, and verdicts that decide.

Pure functions of arrays; :mod:`raysweep.frontier.claims` applies them to a sweep's runs.

**Seeds are blocks.** A run's seed fixes its initial weights, batch order and noise, so runs that
share a seed share most of the seed-to-seed spread (common random numbers). :func:`fit_slope`
estimates the slope of a metric against lambda *within* seeds: ordinary least squares with the
seed as a fixed effect (one dummy per seed, no common intercept), fitted with
``statsmodels.api.OLS``, and a t interval with n - n_seeds - 1 degrees of freedom. statsmodels is
used (not hand-written algebra) because its OLS gives the coefficient, its standard error, the
residual degrees of freedom and nested-model F tests from one fitted object, and its results are
the reference implementation for these formulas. Where no seed is shared across lambda (every
seed at a single lambda) the seed effect cannot be told from the slope, and the fit falls back to
the pooled model (``y ~ lambda``, n - 2 degrees of freedom), saying so in its method.

Two diagnostics come with a blocked fit:

- ``icc``: the share of the pooled model's residual variance the seeds held (the ANOVA estimator
  of the intra-class correlation, ``s_b^2 / (s_b^2 + s_w^2)``, with ``s_w^2`` the blocked model's
  residual mean square and ``s_b^2 = (MS_seed - s_w^2) / n_0`` from the seed sum of squares
  adjusted for lambda, floored at 0). Near 1: blocking bought most of the precision.
- ``interaction_p``: the F test of seed-specific slopes against one common slope (the seed x
  lambda interaction), where every seed has at least 2 lambdas and degrees of freedom remain. A
  small p means the slope itself varies by seed; the blocked interval is then conditional on
  these seeds, and the row says so.
- ``pooled_seeds``: what blocking bought, in seeds. A design that gives every run its own seed
  has per-run variance s_b^2 + s_w^2 (the same two components), so at these lambdas its slope's
  standard error is sqrt((s_b^2 + s_w^2) / Sxx); :func:`pooled_seeds_for_width` projects the seeds
  that design would need for an interval as narrow as the blocked one (standard error shrinking
  as sqrt(seeds), degrees of freedom growing with the runs). For a balanced sweep it is about
  n_seeds / (1 - icc), less the t quantiles' difference. The components of 3 seeds rest on 2
  degrees of freedom, so it is a planning figure: right on average, not in every sweep.

**Frontier shift over seeds, paired.** :func:`paired_interval` takes one shift per seed (that
seed's lambda curve against the same seed's lambda = 0 curve) and gives the t interval of their
mean with n_seeds - 1 degrees of freedom. The seed offset cancels within each pair.

**Verdicts.** :func:`decide` reads a (1 - alpha) two-sided interval for direction (``down`` /
``up`` when it excludes 0) and, failing that, the (1 - 2 alpha) interval for equivalence
(``negligible`` when it lies inside +/- margin: two one-sided tests, TOST, each at level alpha);
else ``undecided``, with the seeds a decision is projected to need (:func:`seeds_to_decide`).

**Looks.** A sweep that adds seeds in rounds until every claim is decided looks at its data
several times. :func:`alpha_per_look` spends the false-verdict rate alpha evenly over the planned
number of looks L (Bonferroni): each look tests at alpha / L, so by the union bound the chance
that any look gives a false direction (or a false "negligible") is at most alpha, whatever the
correlation between looks. It is conservative against a Pocock or O'Brien-Fleming boundary, but
needs no assumption about the information at each look (seeds may fail, rows may gain runs
unevenly); ``benchmarks/claims_coverage.py`` measures the rate it achieves.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import statsmodels.api as sm
from scipy import stats

ALPHA = 0.05  # the false-verdict rate of one look: 95% intervals for direction, 90% for equivalence
BLOCKED_METHOD = "seed-blocked OLS (seed fixed effect), t with n - seeds - 1 df"
POOLED_METHOD = "pooled OLS, t with n - 2 df (no seed at two lambdas: seeds not shared, so not blocked)"
PAIRED_METHOD = "paired over seeds (each seed against its own lambda = 0 curve), t with seeds - 1 df"
INTERACTION_ALPHA = 0.05
MAX_PROJECTED_SEEDS = 100  # past this, "undecided" says "more than" rather than a number


@dataclass
class Estimate:
    """A slope or shift with its standard error and degrees of freedom (from which every interval
    and verdict follows), and the diagnostics of the fit.

    Attributes:
        value: the estimate, in the claim's unit. se: its standard error. df: t degrees of freedom.
        n: observations used. n_seeds: distinct seeds among them (pairs, for a paired shift).
        method: how it was estimated. icc: share of the residual variance held by the seeds
            (blocked fits). interaction_p: p value of the seed x lambda interaction (where testable).
        seed_slope_sd: standard deviation of the per-seed slopes (where each seed has 2 lambdas).
        pooled_se: blocked fits with 2 seeds or more: the standard error the same runs would have
            had if every run had its own seed (seed and residual variance components over the runs'
            spread of lambda), from which :func:`pooled_seeds_for_width` projects what the
            blocking saved.
    """

    value: float
    se: float
    df: float
    n: int
    n_seeds: int
    method: str
    icc: float | None = None
    interaction_p: float | None = None
    seed_slope_sd: float | None = None
    pooled_se: float | None = None

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided (1 - alpha) t interval."""
        if self.se == 0.0:
            return self.value, self.value
        half = float(stats.t.ppf(1.0 - alpha / 2.0, self.df)) * self.se
        return self.value - half, self.value + half


def _seed_codes(seeds: Sequence[object]) -> tuple[np.ndarray, int]:
    codes, uniques = pd.factorize(pd.Series(list(seeds), dtype=object), sort=True)
    return codes, len(uniques)


def seeds_shared(x: Sequence[float], seeds: Sequence[object]) -> bool:
    """True when some seed has runs at two or more distinct values of `x` (so blocking can work)."""
    frame = pd.DataFrame({"x": np.asarray(x, dtype=float), "seed": list(seeds)})
    return bool((frame.groupby("seed", dropna=False)["x"].nunique() >= 2).any())


def _ols(y: np.ndarray, design: np.ndarray) -> sm.regression.linear_model.RegressionResultsWrapper:
    return sm.OLS(y, design).fit()


def fit_slope(x: Sequence[float], y: Sequence[float], seeds: Sequence[object] | None = None) -> Estimate:
    """The slope of `y` on `x` (module docstring): blocked by seed where seeds are shared across
    `x`, else pooled. Needs at least one residual degree of freedom (raises ValueError otherwise)."""
    x_arr, y_arr = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x_arr)
    pooled_design = np.column_stack([np.ones(n), x_arr])
    if seeds is None or not seeds_shared(x_arr, seeds):
        if n < 3:
            raise ValueError(f"{n} runs leave no degree of freedom")
        fit = _ols(y_arr, pooled_design)
        n_seeds = 0 if seeds is None else len(set(seeds))
        return Estimate(float(fit.params[1]), _se(fit, 1), float(fit.df_resid), n, n_seeds, POOLED_METHOD)
    codes, k = _seed_codes(seeds)
    dummies = np.eye(k)[codes]
    blocked_design = np.column_stack([x_arr, dummies])
    df = n - k - 1
    if df < 1:
        raise ValueError(f"{n} runs over {k} seeds leave no degree of freedom")
    blocked = _ols(y_arr, blocked_design)
    estimate = Estimate(float(blocked.params[0]), _se(blocked, 0), float(df), n, k, BLOCKED_METHOD)
    components = _variance_components(_ols(y_arr, pooled_design).ssr, blocked.ssr, codes, k, df)
    if components is not None:
        between, within = components
        total = between + within
        estimate.icc = float(between / total) if total > 0 else 0.0
        spread = float(((x_arr - x_arr.mean()) ** 2).sum())
        estimate.pooled_se = math.sqrt(total / spread) if spread > 0 else None
    estimate.interaction_p, estimate.seed_slope_sd = _interaction(x_arr, y_arr, codes, k, blocked)
    return estimate


def _se(fit: object, index: int) -> float:
    se = float(fit.bse[index])  # type: ignore[attr-defined]
    return se if math.isfinite(se) else 0.0  # an exact fit: statsmodels leaves 0/0 as nan


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


def _interaction(x: np.ndarray, y: np.ndarray, codes: np.ndarray, k: int,
                 blocked: object) -> tuple[float | None, float | None]:
    """(p of the seed x lambda F test, sd of the per-seed slopes), each None where not testable."""
    per_seed = []
    for seed in range(k):
        at = codes == seed
        if np.unique(x[at]).size < 2:
            return None, None
        per_seed.append(np.polyfit(x[at], y[at], 1)[0])
    sd = float(np.std(per_seed, ddof=1)) if k >= 2 else None
    dummies = np.eye(k)[codes]
    full = _ols(y, np.column_stack([dummies, dummies * x[:, None]]))
    if k < 2 or full.df_resid < 1 or full.ssr <= 0:
        return None, sd
    _f, p, _df = full.compare_f_test(blocked)
    return float(p), sd


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
        verdict: ``down``, ``up``, ``negligible`` or ``undecided`` (the claim module names them).
        low, high: the two-sided (1 - alpha) interval. eq_low, eq_high: the (1 - 2 alpha)
            interval of the equivalence test. level: 1 - alpha.
        seeds_needed: for ``undecided``, the total seeds a decision is projected to need (None
            when more than :data:`MAX_PROJECTED_SEEDS`).
    """

    verdict: str
    low: float
    high: float
    eq_low: float
    eq_high: float
    level: float
    seeds_needed: int | None = None


def decide(estimate: Estimate, margin: float, alpha: float = ALPHA) -> Decision:
    """Direction when the (1 - alpha) interval excludes 0; ``negligible`` when the (1 - 2 alpha)
    interval lies inside (-margin, margin); else ``undecided`` (with the projected seeds)."""
    low, high = estimate.interval(alpha)
    eq_low, eq_high = estimate.interval(2 * alpha)
    decision = Decision("undecided", low, high, eq_low, eq_high, 1.0 - alpha)
    if high < 0:
        decision.verdict = "down"
    elif low > 0:
        decision.verdict = "up"
    elif -margin < eq_low and eq_high < margin:
        decision.verdict = "negligible"
    else:
        decision.seeds_needed = seeds_to_decide(estimate, margin, alpha)
    return decision


def seeds_to_decide(estimate: Estimate, margin: float, alpha: float = ALPHA,
                    limit: int = MAX_PROJECTED_SEEDS) -> int | None:
    """The smallest total number of seeds at which the interval is projected to decide.

    The projection keeps the estimate and the spread per seed as measured: the standard error
    shrinks as sqrt(n_seeds / n_seeds'), and the degrees of freedom grow in proportion to the runs.
    It is a planning figure, not a promise: the estimate moves as seeds are added. None past `limit`.
    """
    k = max(estimate.n_seeds, 1)
    per_seed_df = estimate.df / k
    for total in range(k + 1, limit + 1):
        se = estimate.se * math.sqrt(k / total)
        df = max(per_seed_df * total, 1.0)
        half = float(stats.t.ppf(1.0 - alpha / 2.0, df)) * se
        half_eq = float(stats.t.ppf(1.0 - alpha, df)) * se
        if abs(estimate.value) > half or abs(estimate.value) + half_eq < margin:
            return total
    return None


def pooled_seeds_for_width(estimate: Estimate, alpha: float = ALPHA,
                           limit: int = MAX_PROJECTED_SEEDS) -> int | None:
    """The fewest seeds at which a pooled design (every run its own seed, as many runs per seed as
    here) is projected to give a (1 - alpha) interval no wider than `estimate`'s blocked one.

    The projection starts from :attr:`Estimate.pooled_se` (the standard error of that design at
    these runs, module docstring): it shrinks as sqrt(n_seeds / seeds') and the residual degrees
    of freedom are runs' - 2. It can come out below ``n_seeds`` where the seeds held nothing
    (blocking then costs degrees of freedom). None without the components (pooled fits, one
    seed), or past `limit`.
    """
    if estimate.pooled_se is None or estimate.se <= 0:
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
