"""The paper's two claims as statistics over a sweep's runs, each with an interval and a verdict that decides.

Pure functions over the runs table of :func:`raysweep.frontier.collect.runs_frame` (and the
operating-points table, when there is one); no MLflow in here; the statistics themselves are in
:mod:`raysweep.frontier.statistics`. Per group (dataset x model x neural loss x pixel loss x
condition, the ``none`` runs joining each neural group as lambda = 0, see
:mod:`raysweep.frontier.selection`: runs that differ in any other swept key are different
conditions, each with its own rows):

- **Claim 1, rate vs lambda at fixed beta** (``rate_vs_lambda``, one row per beta): the mean over
  seeds of each seed's OLS slope of the final rate (nats) against lambda, over the finished
  fixed-beta runs, with a t interval over the seeds' slopes (seeds - 1 df): an interval for the
  method, valid under a seed x lambda interaction. Pooled OLS only where no seed ran at two
  lambdas. A run without a seed is its own seed. Unit: nats per unit lambda.
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
  target R*): the two-stage slope of mean per-sample anisotropy (Var_j log sigma^2_j) against
  lambda over the runs within the tolerance of their target (GECO runs and matched-rate operating
  points); off-target runs are left out and counted.

A verdict is read off the intervals as measured (:func:`raysweep.frontier.statistics.decide`):
``falls`` / ``rises`` (``shifts down`` / ``shifts up``) when the (1 - alpha) interval excludes 0;
``negligible`` when the (1 - 2 alpha) interval lies inside +/- the claim's margin (two one-sided
tests); else ``undecided``, with the seeds a decision is projected to need. alpha is 0.05 at one
look and, for a sweep that ran ``raysweep extend --until-decided``, the level its looks tested at
(:class:`ClaimSettings`, the sweep's ``search.claims`` ledger). With fewer than 2 lambdas or no
replicate, ``insufficient data`` and what to add; a row whose estimate cannot carry an interval
(a shift that cannot be computed, a zero or non-finite standard error) is ``withheld`` with the
reason. Whether the verdict had settled by the end of training is
:mod:`raysweep.frontier.along_training`'s (the row's ``settled``).

:mod:`raysweep.frontier.claims_table` turns the rows into JSON, CSV, text and markdown.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

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
from raysweep.names import (
    ANISOTROPY_VS_LAMBDA_CLAIM,
    CLAIM_SPECS,
    FRONTIER_SHIFT_CLAIM,
    RATE_VS_LAMBDA_CLAIM,
    ClaimSpec,
)

RATE_VS_LAMBDA, FRONTIER_SHIFT, ANISOTROPY_VS_LAMBDA = (RATE_VS_LAMBDA_CLAIM.name, FRONTIER_SHIFT_CLAIM.name,
                                                       ANISOTROPY_VS_LAMBDA_CLAIM.name)


class Verdict(StrEnum):
    """A row's verdict (a ``str``: it prints, serialises and compares as its text)."""

    FALLS = "falls"
    RISES = "rises"
    NEGLIGIBLE = "negligible"
    UNDECIDED = "undecided"
    SHIFTS_DOWN = "shifts down"
    SHIFTS_UP = "shifts up"
    INSUFFICIENT = "insufficient data"
    WITHHELD = "withheld"

    @property
    def decided(self) -> bool:
        """Whether it decides the row (what ``--until-decided`` waits for)."""
        return self in DECIDED


FALLS, RISES, NEGLIGIBLE, UNDECIDED = Verdict.FALLS, Verdict.RISES, Verdict.NEGLIGIBLE, Verdict.UNDECIDED
SHIFTS_DOWN, SHIFTS_UP = Verdict.SHIFTS_DOWN, Verdict.SHIFTS_UP
INSUFFICIENT, WITHHELD = Verdict.INSUFFICIENT, Verdict.WITHHELD
VERDICTS = tuple(Verdict)
#: The verdicts that decide a row (what ``--until-decided`` waits for).
DECIDED = (FALLS, RISES, NEGLIGIBLE, SHIFTS_DOWN, SHIFTS_UP)
#: Default equivalence margins, in each claim's unit (README "Claims"; ``search.claims.margin.<claim>``),
#: from the claim registry (:data:`raysweep.names.CLAIM_SPECS`): a rate slope smaller than 1 nat per
#: unit lambda moves the rate by under 1 nat per image across the whole lambda range (the paper's
#: effects are tens of nats); a frontier within 1 nat of the lambda = 0 curve on average; an
#: anisotropy slope under 0.1 per unit lambda (Var_j log sigma^2 is unitless; the paper's
#: anisotropies are of order 1 to 10).
DEFAULT_MARGINS: dict[str, float] = {name: spec.default_margin for name, spec in CLAIM_SPECS.items()}
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
NOT_SETTLED = "not settled: train longer"


@dataclass
class ClaimSettings:
    """How the claims are decided.

    Attributes:
        margins: equivalence margin per claim, in its unit (defaults :data:`DEFAULT_MARGINS`).
        alpha_look: the level of this read (1 - confidence): 0.05 for a sweep read once; the level
            of the last look of ``--until-decided`` for a sweep that ran one.
        looks: looks taken or planned so far (1 for a sweep read once).
        alpha_spent: the false-verdict rate the looks of ``--until-decided`` have spent.
        alpha_bound: the bound on the false-verdict rate over every look of the sweep (0.05, more
            where ``--extra-alpha`` carried a further sequence past a spent budget).
        seeds_per_round: the rounds the projected route (``--until-decided``) would add seeds in.
        diagnostics: fit the seed-blocked diagnostics (icc, interaction, pooled seeds); simulations
            of thousands of sweeps leave them off.
    """

    margins: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MARGINS))
    alpha_look: float = S.ALPHA
    looks: int = 1
    alpha_spent: float = 0.0
    alpha_bound: float = S.ALPHA
    seeds_per_round: int = 2
    diagnostics: bool = True

    @property
    def route_alpha(self) -> float:
        """The budget the suggested route (``raysweep extend --until-decided``) would test with:
        what is left of the bound, else a fresh ``--extra-alpha`` of 0.05."""
        left = self.alpha_bound - self.alpha_spent
        return left if left > 1e-12 else S.ALPHA


def _part(part: str, name: str) -> property:
    """A read-only row attribute: `name` of the row's `part` (its estimate or decision), None without one."""
    return property(lambda row: None if getattr(row, part) is None else getattr(getattr(row, part), name),
                    doc=f"{part}.{name}, or None when the row has no {part}")


@dataclass
class ClaimRow:
    """One line of the claims table: where it is taken, an :class:`~raysweep.frontier.statistics.Estimate`
    and the :class:`~raysweep.frontier.statistics.Decision` read from it (either None when the row
    has none), and the :class:`Verdict`. :func:`raysweep.frontier.claims_table.row_record` flattens
    it into the JSON / CSV columns.

    Attributes:
        claim: ``rate_vs_lambda``, ``frontier_shift`` or ``anisotropy_vs_lambda``.
        group: ``dataset / model / loss[ / pixel loss P][ / condition]``; dataset, model, loss,
            pixel_loss, condition (``grid_spacing=4``; '' when the runs share every other key): its parts.
        beta: the fixed KL weight (claim 1); lambda_neural: the curve compared to lambda 0 (shift);
            target_rate: R* in nats (claim 2). The others are None.
        estimate, decision: the statistics (None when the row has none).
        point: a value without an interval (a shift from one seed), else None.
        verdict: see the module docstring. margin: the equivalence margin. looks: looks so far.
        alpha_bound: the bound on the false-verdict rate over every look of the sweep.
        n: runs used. n_seeds: seeds averaged (two-stage, paired) or among the runs (pooled).
        pooled_seeds: the seeds a design giving every run its own seed is projected to need for an
            interval this narrow (:func:`raysweep.frontier.statistics.pooled_seeds_for_width`).
        excluded: runs left out as off target (claim 2), or seeds left out for too little overlap
            (shift). seeds_left_out: seeds at a single lambda (slopes). tolerance: the relative
            rate tolerance (claim 2).
        settled: whether the verdict at the last validation equals the verdict at the validation
            nearest 75% of training (None: fewer than 2 validations); check_step: that validation;
            verdict_at_check: the verdict there; last_step: the last validation.
        reason: why the verdict is not decided, and notes (else empty).
    """

    claim: str
    group: str
    dataset: str
    model: str
    loss: str
    pixel_loss: str
    condition: str = ""
    beta: float | None = None
    lambda_neural: float | None = None
    target_rate: float | None = None
    estimate: S.Estimate | None = None
    decision: S.Decision | None = None
    point: float | None = None
    verdict: Verdict = INSUFFICIENT
    margin: float | None = None
    looks: int = 1
    alpha_bound: float = S.ALPHA
    n: int = 0
    n_seeds: int = 0
    pooled_seeds: int | None = None
    excluded: int = 0
    seeds_left_out: int = 0
    tolerance: float | None = None
    settled: bool | None = None
    check_step: float | None = None
    verdict_at_check: str | None = None
    last_step: float | None = None
    reason: str = ""

    @property
    def slope(self) -> float | None:
        """The estimate (claim 1 and 2: per unit lambda; shift: nats), or the single seed's point."""
        return self.estimate.value if self.estimate is not None else self.point

    # the estimate's and the decision's numbers, read through the row (None where it has none)
    se = _part("estimate", "se")
    df = _part("estimate", "df")
    icc = _part("estimate", "icc")
    interaction_p = _part("estimate", "interaction_p")
    seed_slope_sd = _part("estimate", "seed_slope_sd")
    ci_low = _part("decision", "low")
    ci_high = _part("decision", "high")
    eq_low = _part("decision", "eq_low")
    eq_high = _part("decision", "eq_high")
    level = _part("decision", "level")
    seeds_needed = _part("decision", "seeds_needed")

    @property
    def method(self) -> str:
        return "" if self.estimate is None else self.estimate.method


def _note(row: ClaimRow, text: str) -> None:
    row.reason = f"{row.reason}; {text}" if row.reason else text


def _decide(row: ClaimRow, estimate: S.Estimate, settings: ClaimSettings) -> None:
    """Fill the row's estimate, decision and verdict at this read's level; an estimate that cannot
    carry an interval withholds the row with its reason."""
    margin = settings.margins.get(row.claim, CLAIM_SPECS[row.claim].default_margin)
    row.estimate, row.margin, row.looks, row.alpha_bound = estimate, margin, settings.looks, settings.alpha_bound
    row.n_seeds, row.seeds_left_out = estimate.n_seeds, estimate.seeds_left_out
    if estimate.seeds_left_out:
        _note(row, f"{estimate.seeds_left_out} seed{'s' * (estimate.seeds_left_out != 1)} at a single lambda "
                   "left out (a slope needs 2 lambdas per seed)")
    if not estimate.usable:
        row.verdict = WITHHELD
        what = "zero" if estimate.se == 0 else "a non-finite"
        _note(row, f"{what} standard error (the {estimate.n_seeds} seeds' estimates are identical or not numbers): "
                   "no interval; check that these runs' metric varies")
        return
    route = S.until_decided_route(estimate.n_seeds, settings.route_alpha, settings.seeds_per_round)
    decision = S.decide(estimate, margin, settings.alpha_look, route=route)
    row.decision = decision
    row.pooled_seeds = S.pooled_seeds_for_width(estimate, settings.alpha_look)
    spec = CLAIM_SPECS[row.claim]
    down, up = Verdict(spec.down), Verdict(spec.up)
    row.verdict = {S.Direction.DOWN: down, S.Direction.UP: up, S.Direction.NEGLIGIBLE: NEGLIGIBLE,
                   S.Direction.UNDECIDED: UNDECIDED}[decision.verdict]
    if row.verdict == UNDECIDED:
        if decision.seeds_needed is None:
            _note(row, f"undecided: more than {S.MAX_PROJECTED_SEEDS} seeds projected (the effect is close to the "
                       f"margin ±{margin:g}); widen the margin or {ADD_SEEDS}")
        else:
            more = decision.seeds_needed - estimate.n_seeds
            _note(row, f"undecided: about {more} more seed{'s' * (more != 1)} ({decision.seeds_needed} in all) projected "
                       f"to decide at the level of raysweep extend --until-decided --max-seeds {decision.seeds_needed}")
    if estimate.interaction_p is not None and estimate.interaction_p < S.INTERACTION_ALPHA:
        spread = f" (sd {estimate.seed_slope_sd:.3g} net of noise)" if estimate.seed_slope_sd is not None else ""
        _note(row, f"seed x lambda interaction p={estimate.interaction_p:.2g}: each seed has its own slope{spread}; "
                   "the interval is over seeds, so it holds for the method")


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


def _seeds(frame: pd.DataFrame) -> list:
    """The seed of each run; a run without one is its own seed (never lumped with the others)."""
    runs = frame["run_id"] if "run_id" in frame else pd.Series(range(len(frame)), index=frame.index)
    if "seed" not in frame:
        return [f"unseeded {run}" for run in runs]
    return [s if s == s and s is not None else f"unseeded {run}" for s, run in zip(frame["seed"], runs, strict=True)]


def _slope_row(base: dict, frame: pd.DataFrame, value: str, settings: ClaimSettings, **extra: object) -> ClaimRow:
    """A claim 1 / claim 2 row: the slope of `value` against lambda over `frame` (finite values only)."""
    usable = frame[np.isfinite(frame["lambda_neural"].to_numpy(dtype=float))
                   & np.isfinite(frame[value].to_numpy(dtype=float))]
    seeds = _seeds(usable)
    row = ClaimRow(**base, **extra, n=len(usable), n_seeds=len(set(seeds)), looks=settings.looks)
    if usable.empty and row.reason:
        return row
    reason = _missing(usable["lambda_neural"])
    if reason:
        _note(row, reason)
        return row
    try:
        estimate = S.fit_slope(usable["lambda_neural"], usable[value], seeds, diagnostics=settings.diagnostics)
    except ValueError as err:
        _note(row, f"{err}; {ADD_SEEDS}")
        return row
    row.n = estimate.n
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
    fixed["seed_key"] = _seeds(fixed)
    zero = fixed[fixed["lambda_neural"] == 0]
    rows = []
    for lam, curve in fixed[fixed["lambda_neural"] > 0].groupby("lambda_neural", sort=True):
        row = ClaimRow(**base, claim=FRONTIER_SHIFT, lambda_neural=float(lam), looks=settings.looks)
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
            row.point = float(next(iter(shifts.values())))
            _note(row, f"1 seed: no interval; {ADD_SEEDS}")
            continue
        _decide(row, S.paired_interval(list(shifts.values())), settings)
    return rows


# ------------------------------------------------------------------------- the claim registry
#: How a claim is computed over one group's runs: (members, base row fields, settings, tolerance) -> rows.
ComputeClaim = Callable[[pd.DataFrame, dict, ClaimSettings, "float | None"], list[ClaimRow]]


@dataclass(frozen=True)
class ClaimKind:
    """A registered claim: its :class:`~raysweep.names.ClaimSpec` (name, label, unit, default
    margin, direction words, where its rows are taken) and how its rows are computed. Adding a
    claim is its spec in :mod:`raysweep.names` and one :func:`register_claim` beside its code."""

    spec: ClaimSpec
    compute: ComputeClaim


#: Every claim :func:`compute_claims` reads, in table order.
CLAIM_KINDS: dict[str, ClaimKind] = {}


def register_claim(name: str, compute: ComputeClaim) -> ClaimKind:
    """Register how the claim `name` (a spec of :data:`raysweep.names.CLAIM_SPECS`) is computed."""
    if name not in CLAIM_SPECS:
        raise ValueError(f"claim {name!r} has no spec: register_claim_spec it in raysweep.names first")
    spec = CLAIM_SPECS[name]
    for verdict in (spec.down, spec.up):
        Verdict(verdict)  # a direction word the tables, JSON and --until-decided know
    kind = CLAIM_KINDS[name] = ClaimKind(spec, compute)
    return kind


register_claim(RATE_VS_LAMBDA, lambda members, base, settings, tolerance: rate_vs_lambda(members, base, settings))
register_claim(FRONTIER_SHIFT, lambda members, base, settings, tolerance: frontier_shift(members, base, settings))
register_claim(ANISOTROPY_VS_LAMBDA,
               lambda members, base, settings, tolerance: anisotropy_vs_lambda(members, base, tolerance, settings))
#: The registered claims' names, in table order.
CLAIMS = tuple(CLAIM_KINDS)


# -------------------------------------------------------------------------------- all claims
def _known(runs: pd.DataFrame, column: str) -> float | None:
    if column not in runs:
        return None
    known = pd.to_numeric(runs[column], errors="coerce").dropna()
    return None if known.empty else float(known.max())


def settings_from_runs(runs: pd.DataFrame, margins: Mapping[str, float] | None = None,
                       looks: int | None = None, alpha_look: float | None = None,
                       alpha_bound: float | None = None) -> ClaimSettings:
    """The claim settings: `margins` where given, else the sweep's own (``search.claims``: columns
    ``claims_margin_<claim>``, ``claims_looks``, ``claims_alpha_look``, ``claims_alpha_spent``,
    ``claims_alpha_bound``, ``claims_seeds_per_round`` of
    :func:`raysweep.frontier.collect.with_sweep_settings`), else the defaults. `looks` (a look of
    a sequence planning that many, each at 0.05 / looks) overrides the sweep's level, and
    `alpha_look` / `alpha_bound` (a look of ``--until-decided``) override both."""
    settings = ClaimSettings()
    for claim in CLAIM_SPECS:
        value = _known(runs, f"claims_margin_{claim}")
        if value is not None:
            settings.margins[claim] = value
    recorded_looks = _known(runs, "claims_looks")
    if recorded_looks is not None:
        settings.looks = int(recorded_looks)
        settings.alpha_look = S.alpha_per_look(settings.looks)  # a sweep written before the ledger
    for name in ("alpha_look", "alpha_spent", "alpha_bound"):
        value = _known(runs, f"claims_{name}")
        if value is not None:
            setattr(settings, name, value)
    per_round = _known(runs, "claims_seeds_per_round")
    if per_round is not None:
        settings.seeds_per_round = int(per_round)
    settings.margins.update(margins or {})
    if looks is not None:
        settings.looks, settings.alpha_look = int(looks), S.alpha_per_look(int(looks))
    if alpha_look is not None:
        settings.alpha_look = float(alpha_look)
    if alpha_bound is not None:
        settings.alpha_bound = float(alpha_bound)
    return settings


def compute_claims(runs: pd.DataFrame, points: pd.DataFrame | None = None, tolerance: float | None = None,
                   margins: Mapping[str, float] | None = None, looks: int | None = None,
                   settings: ClaimSettings | None = None) -> list[ClaimRow]:
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
        looks: looks a sequence plans (each at 0.05 / looks); None: the sweep's level.
        settings: all of the above at once (margins and looks are then ignored).
    """
    if runs.empty:
        return []
    settings = settings or settings_from_runs(runs, margins, looks)
    runs = with_operating_points(runs, points)
    rows: list[ClaimRow] = []
    for title, members in groups(runs):
        base = {"group": title, **group_key(members)}
        for kind in CLAIM_KINDS.values():
            rows += kind.compute(members, base, settings, tolerance)
    return rows


def open_rows(rows: Sequence[ClaimRow]) -> list[ClaimRow]:
    """The rows more seeds can still decide: ``undecided``, and ``insufficient data`` for want of seeds."""
    return [r for r in rows if r.verdict == UNDECIDED or (r.verdict == INSUFFICIENT and ADD_SEEDS in r.reason)]


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)
