"""Synthetic sweeps with a known truth and seeds shared across lambda (common random numbers), for
the claims' error rates: the tests (test_claims_statistics.py) and benchmarks/claims_coverage.py.

Every draw is its own group (``dataset = d<draw>``), so one :func:`raysweep.frontier.claims.compute_claims`
call over the concatenated frame gives one row per draw: the simulation is vectorised over draws.

- :func:`slope_runs`: rate = 10 + slope * lambda + offset_seed + residual at one beta, lambda in
  {0, .25, .5, .75, 1}, offset sd 2 shared by the seed's runs, residual sd 0.5 (the issue's truth).
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


def slope_runs(rng: np.random.Generator, draws: int, seeds: int, slope: float,
               seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD) -> pd.DataFrame:
    """`draws` independent claim-1 sweeps of `seeds` seeds x 5 lambdas at beta 0.03 (module docstring)."""
    d, s, lam = (a.ravel() for a in np.meshgrid(np.arange(draws), np.arange(seeds), LAMBDAS, indexing="ij"))
    offsets = rng.normal(0.0, seed_sd, (draws, seeds))[d, s]
    rate = 10.0 + slope * lam + offsets + rng.normal(0.0, residual_sd, len(d))
    return _frame(d, s, lam, np.full(len(d), 0.03), rate, np.full(len(d), -3.0))


def more_seeds(rng: np.random.Generator, draws: int, first_seed: int, seeds: int, slope: float,
               seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD) -> pd.DataFrame:
    """The runs `seeds` new seeds (numbered from `first_seed`) add to each draw of :func:`slope_runs`."""
    frame = slope_runs(rng, draws, seeds, slope, seed_sd, residual_sd)
    frame["seed"] += first_seed
    return frame


def frontier_runs(rng: np.random.Generator, draws: int, seeds: int, shift: float, spread: float = 0.3,
                  seed_sd: float = SEED_SD, residual_sd: float = RESIDUAL_SD,
                  log_d_seed_sd: float = 0.1, log_d_noise: float = 0.05) -> pd.DataFrame:
    """`draws` sweeps of `seeds` seeds x lambda {0, 0.5} x 3 betas whose true frontier shift is `shift`."""
    d, s, lam, b = (a.ravel() for a in np.meshgrid(np.arange(draws), np.arange(seeds), np.array([0.0, 0.5]),
                                                   np.arange(len(BETAS)), indexing="ij"))
    log_mse = (BASE_LOG_MSE[b] + spread * (lam > 0) + rng.normal(0.0, log_d_seed_sd, (draws, seeds))[d, s]
               + rng.normal(0.0, log_d_noise, len(d)))
    curve = 10.0 - 4.0 * log_mse + 0.5 * log_mse**2
    rate = curve + shift * (lam > 0) + rng.normal(0.0, seed_sd, (draws, seeds))[d, s] + rng.normal(0.0, residual_sd, len(d))
    return _frame(d, s, lam, BETAS[b], rate, log_mse)


def sequential_slope(rng: np.random.Generator, slope: float, first: int = 3, per_round: int = 2,
                     max_seeds: int = 9, margin: float = 1.0) -> tuple[str, int]:
    """One run of ``raysweep extend --until-decided`` on a claim-1 row of this truth: look at
    `first` seeds, add `per_round` seeds until the row is decided or `max_seeds` are spent, each
    look at alpha / L (L planned looks), with the product's own fit and decision
    (:func:`raysweep.frontier.statistics.fit_slope`, :func:`~raysweep.frontier.statistics.decide`).
    Returns (verdict, seeds used)."""
    from raysweep.frontier import statistics as S

    looks = S.planned_looks(first, max_seeds, per_round)
    alpha = S.alpha_per_look(looks)
    offsets = rng.normal(0.0, SEED_SD, max_seeds)
    x = np.tile(LAMBDAS, max_seeds)
    seed = np.repeat(np.arange(max_seeds), len(LAMBDAS))
    y = 10.0 + slope * x + offsets[seed] + rng.normal(0.0, RESIDUAL_SD, len(x))
    seeds = first
    while True:
        at = seed < seeds
        decision = S.decide(S.fit_slope(x[at], y[at], list(seed[at])), margin, alpha)
        if decision.verdict != "undecided" or seeds >= max_seeds:
            return decision.verdict, seeds
        seeds = min(seeds + per_round, max_seeds)


def slope_decisions(rng: np.random.Generator, draws: int, seeds: int, slope: float,
                    margin: float = 1.0) -> list[tuple[str, float, float]]:
    """(verdict, low, high) of the product's blocked fit and decision on `draws` claim-1 sweeps,
    straight from arrays (thousands of draws in seconds; the rows' path is checked against it)."""
    from raysweep.frontier import statistics as S

    frame = slope_runs(rng, draws, seeds, slope)
    out = []
    x, y, seed = frame["lambda_neural"].to_numpy(), frame["rate"].to_numpy(), frame["seed"].to_numpy()
    per = seeds * len(LAMBDAS)
    for d in range(draws):
        part = slice(d * per, (d + 1) * per)
        decision = S.decide(S.fit_slope(x[part], y[part], list(seed[part])), margin)
        out.append((decision.verdict, decision.low, decision.high))
    return out


def shift_decisions(rng: np.random.Generator, draws: int, seeds: int, shift: float,
                    margin: float = 1.0, min_overlap: float = 0.35, spread: float = 0.3) -> list[tuple[str, float, float]]:
    """(verdict, low, high) of the product's paired shift on `draws` sweeps of :func:`frontier_runs`
    (each seed's PCHIP shift, then the paired t interval), straight from arrays; seeds whose curves
    overlap too little are left out, and a draw with fewer than 2 seeds left is ``withheld``."""
    from raysweep.frontier import claims as C
    from raysweep.frontier import statistics as S

    frame = frontier_runs(rng, draws, seeds, shift, spread=spread)
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
