"""Synthetic sweeps with a known truth and seeds shared across lambda (common random numbers), for
the claims' error rates: the tests (test_claims_statistics.py) and benchmarks/claims_coverage.py.

Every draw is its own group (``dataset = d<draw>``), so one :func:`raysweep.frontier.claims.compute_claims`
call over the concatenated frame gives one row per draw: the simulation is vectorised over draws.

- :func:`slope_runs`: rate = 10 + (slope + u_seed) * lambda + offset_seed + residual at one beta,
  lambda in {0, .25, .5, .75, 1}, offset sd 2 shared by the seed's runs, residual sd 0.5, and a
  seed x lambda interaction: each seed's own slope differs from the mean slope by u_seed ~ N(0, tau^2).
- :func:`anisotropy_runs`: the same truth for claim 2: GECO runs on their 15-nat target whose mean
  anisotropy has that slope against lambda.
- :func:`frontier_runs`: per seed, a rate-distortion curve at 3 betas for lambda 0 and lambda 0.5:
  log MSE = base(beta) + spread * [lambda > 0] + seed's log-distortion offset + noise, and
  rate = R(log MSE) + shift * [lambda > 0] + offset_seed + residual, with R convex
  (10 - 4 x + 0.5 x^2): the true shift at equal distortion is `shift` everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LAMBDAS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
SEED_SD, RESIDUAL_SD = 2.0, 0.5
BASE_LOG_MSE = np.array([-4.0, -3.3, -2.6])  # per beta, lambda = 0
BETAS = np.array([0.01, 0.03, 0.1])


def _frame(draws: np.ndarray, seeds: np.ndarray, lambdas: np.ndarray, betas: np.ndarray, rate: np.ndarray,
           log_mse: np.ndarray, seed_offset: int = 0) -> pd.DataFrame:
    n = len(rate)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)], "status": "finished", "dataset": [f"d{d}" for d in draws],
        "model": "vector_vae", "loss": np.where(lambdas > 0, "box_blur", "none"), "pixel_loss": "sse",
        "lambda_neural": lambdas, "beta": betas, "seed": seeds + seed_offset, "rate": rate,
        "mse": np.exp(log_mse), "anisotropy": 1.0,
    })


def _slope_truth(rng: np.random.Generator, draws: int, seeds: int, slope: float, tau: float,
                 seed_sd: float, residual_sd: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(draw, seed, lambda, y) with y = (slope + u_seed) * lambda + offset_seed + residual."""
    d, s, lam = (a.ravel() for a in np.meshgrid(np.arange(draws), np.arange(seeds), LAMBDAS, indexing="ij"))
    offsets = rng.normal(0.0, seed_sd, (draws, seeds))[d, s]
    own = rng.normal(0.0, tau, (draws, seeds))[d, s] if tau > 0 else 0.0
    return d, s, lam, (slope + own) * lam + offsets + rng.normal(0.0, residual_sd, len(d))


def slope_runs(rng: np.random.Generator, draws: int, seeds: int, slope: float, tau: float = 0.0,
               seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD) -> pd.DataFrame:
    """`draws` independent claim-1 sweeps of `seeds` seeds x 5 lambdas at beta 0.03 (module docstring)."""
    d, s, lam, y = _slope_truth(rng, draws, seeds, slope, tau, seed_sd, residual_sd)
    return _frame(d, s, lam, np.full(len(d), 0.03), 10.0 + y, np.full(len(d), -3.0))


def anisotropy_runs(rng: np.random.Generator, draws: int, seeds: int, slope: float, tau: float = 0.0,
                    seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD) -> pd.DataFrame:
    """`draws` claim-2 sweeps: GECO runs at R* = 15 nats (rates within 2% of it), `seeds` seeds x 5
    lambdas, anisotropy = 3 + (slope + u_seed) * lambda + offset_seed + residual."""
    d, s, lam, y = _slope_truth(rng, draws, seeds, slope, tau, seed_sd, residual_sd)
    frame = _frame(d, s, lam, np.full(len(d), 0.03), 15.0 * (1.0 + rng.uniform(-0.02, 0.02, len(d))),
                   np.full(len(d), -3.0))
    return frame.assign(anisotropy=3.0 + y, target_rate=15.0)


def more_seeds(rng: np.random.Generator, draws: int, first_seed: int, seeds: int, slope: float,
               seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD) -> pd.DataFrame:
    """The runs `seeds` new seeds (numbered from `first_seed`) add to each draw of :func:`slope_runs`."""
    frame = slope_runs(rng, draws, seeds, slope, seed_sd=seed_sd, residual_sd=residual_sd)
    frame["seed"] += first_seed
    return frame


def frontier_runs(rng: np.random.Generator, draws: int, seeds: int, shift: float, spread: float = 0.3,
                  seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD,
                  log_d_seed_sd: float = 0.1, log_d_noise: float = 0.05, shift_sd: float = 0.0) -> pd.DataFrame:
    """`draws` sweeps of `seeds` seeds x lambda {0, 0.5} x 3 betas whose true mean frontier shift is
    `shift`; each seed's own shift differs from it by N(0, shift_sd^2) (the seed x lambda interaction)."""
    d, s, lam, b = (a.ravel() for a in np.meshgrid(np.arange(draws), np.arange(seeds), np.array([0.0, 0.5]),
                                                   np.arange(len(BETAS)), indexing="ij"))
    log_mse = (BASE_LOG_MSE[b] + spread * (lam > 0) + rng.normal(0.0, log_d_seed_sd, (draws, seeds))[d, s]
               + rng.normal(0.0, log_d_noise, len(d)))
    curve = 10.0 - 4.0 * log_mse + 0.5 * log_mse**2
    own = shift + (rng.normal(0.0, shift_sd, (draws, seeds))[d, s] if shift_sd > 0 else 0.0)
    rate = curve + own * (lam > 0) + rng.normal(0.0, seed_sd, (draws, seeds))[d, s] + rng.normal(0.0, residual_sd, len(d))
    return _frame(d, s, lam, BETAS[b], rate, log_mse)


def sequential_slope(rng: np.random.Generator, slope: float, first: int = 3, per_round: int = 2,
                     max_seeds: int = 9, margin: float = 1.0, tau: float = 0.0) -> tuple[str, int]:
    """One run of ``raysweep extend --until-decided`` on a claim-1 row of this truth: look at
    `first` seeds, add `per_round` seeds until the row is decided or `max_seeds` are spent, each
    look at alpha / L (L planned looks), with the product's own fit and decision
    (:func:`raysweep.frontier.statistics.fit_slope`, :func:`~raysweep.frontier.statistics.decide`).
    Returns (verdict, seeds used)."""
    from raysweep.frontier import statistics as S

    looks = S.planned_looks(first, max_seeds, per_round)
    alpha = S.alpha_per_look(looks)
    _d, seed, x, y = _slope_truth(rng, 1, max_seeds, slope, tau, SEED_SD, RESIDUAL_SD)
    seeds = first
    while True:
        at = seed < seeds
        decision = S.decide(S.fit_slope(x[at], y[at], list(seed[at]), diagnostics=False), margin, alpha)
        if decision.verdict != "undecided" or seeds >= max_seeds:
            return decision.verdict, seeds
        seeds = min(seeds + per_round, max_seeds)


def slope_decisions(rng: np.random.Generator, draws: int, seeds: int, slope: float, margin: float = 1.0,
                    tau: float = 0.0, blocked: bool = False) -> list[tuple[str, float, float]]:
    """(verdict, low, high) of the product's two-stage fit and decision on `draws` claim-1 sweeps,
    straight from arrays (thousands of draws in seconds; the rows' path is checked against it).
    `blocked`: the seed-blocked interval instead (the method before the two-stage one, for comparison)."""
    from raysweep.frontier import statistics as S

    d, seed, x, y = _slope_truth(rng, draws, seeds, slope, tau, SEED_SD, RESIDUAL_SD)
    out = []
    per = seeds * len(LAMBDAS)
    for draw in range(draws):
        part = slice(draw * per, (draw + 1) * per)
        estimate = S.fit_slope(x[part], y[part], list(seed[part]), diagnostics=blocked)
        if blocked:
            estimate = S.Estimate(estimate.value, estimate.blocked_se, estimate.blocked_df, estimate.n,
                                  estimate.n_seeds, S.BLOCKED_METHOD)
        decision = S.decide(estimate, margin)
        out.append((decision.verdict, decision.low, decision.high))
    return out


def shift_decisions(rng: np.random.Generator, draws: int, seeds: int, shift: float, margin: float = 1.0,
                    min_overlap: float = 0.35, spread: float = 0.3,
                    shift_sd: float = 0.0) -> list[tuple[str, float, float]]:
    """(verdict, low, high) of the product's paired shift on `draws` sweeps of :func:`frontier_runs`
    (each seed's PCHIP shift, then the paired t interval), straight from arrays; seeds whose curves
    overlap too little are left out, and a draw with fewer than 2 seeds left is ``withheld``."""
    from raysweep.frontier import claims as C
    from raysweep.frontier import statistics as S

    frame = frontier_runs(rng, draws, seeds, shift, spread=spread, shift_sd=shift_sd)
    beta, rate, mse = (frame[c].to_numpy(dtype=float) for c in ("beta", "rate", "mse"))
    per_seed = 2 * len(BETAS)
    out = []
    for d in range(draws):
        values = []
        for s in range(seeds):
            start = (d * seeds + s) * per_seed
            zero, one = slice(start, start + len(BETAS)), slice(start + len(BETAS), start + per_seed)
            value, _ = C.average_rate_difference(*C.seed_curve(beta[zero], rate[zero], mse[zero]),
                                                 *C.seed_curve(beta[one], rate[one], mse[one]), min_overlap=min_overlap)
            if value is not None:
                values.append(value)
        if len(values) < 2:
            out.append(("withheld", float("nan"), float("nan")))
            continue
        decision = S.decide(S.paired_interval(values), margin)
        out.append((decision.verdict, decision.low, decision.high))
    return out


def anisotropy_decisions(rng: np.random.Generator, draws: int, seeds: int, slope: float, margin: float = 1.0,
                         tau: float = 0.0, tolerance: float = 0.05) -> list[tuple[str, float, float]]:
    """(verdict, low, high) of claim 2 on `draws` sweeps of :func:`anisotropy_runs`, straight from
    arrays as the rows compute it: the on-target runs (``|rate / R* - 1| <= tolerance``), then the
    product's two-stage fit and decision (the rows' path is checked against it draw by draw)."""
    from raysweep.frontier import statistics as S
    from raysweep.tune.matched_rate.points import within_tolerance

    frame = anisotropy_runs(rng, draws, seeds, slope, tau=tau)
    x, y, seed = (frame[c].to_numpy() for c in ("lambda_neural", "anisotropy", "seed"))
    on = np.array([within_tolerance(float(r), 15.0, tolerance) for r in frame["rate"]])
    per = seeds * len(LAMBDAS)
    out = []
    for draw in range(draws):
        part = np.zeros(len(x), dtype=bool)
        part[draw * per:(draw + 1) * per] = True
        part &= on
        decision = S.decide(S.fit_slope(x[part], y[part], list(seed[part]), diagnostics=False), margin)
        out.append((decision.verdict, decision.low, decision.high))
    return out
