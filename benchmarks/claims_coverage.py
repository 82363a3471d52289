"""Error rates of the claims' statistics at the seed counts people use, by simulation.

On a synthetic truth with seeds shared across lambda (tests/frontier/synthetic_truth.py: a seed
offset of sd 2 shared by the seed's runs, residual sd 0.5, lambda in {0, .25, .5, .75, 1}) this
measures, at 2 to 5 seeds:

- claim 1: how often a slope of -2 is found ("falls"), pooled OLS (seeds as independent
  replicates, the old method) against seed-blocked OLS (the product's), and each one's coverage
  and false-verdict rate at no slope;
- the frontier shift: coverage at a shift of 0 and of -1.5 nats of the old percentile bootstrap
  over seeds (seed-averaged curves, 1000 resamples) against the paired t interval (the product's);
- the paired shift's coverage by how much of the narrower curve's span the two curves share
  (what :data:`raysweep.frontier.claims.MIN_OVERLAP` was chosen from);
- ``--until-decided``: false verdicts at no slope over sequential runs, and the mean seeds to a
  decision at a slope of -2 (3 seeds first, 2 per round, at most 9).

    python benchmarks/claims_coverage.py            # 1000 draws per cell (a few minutes)
    python benchmarks/claims_coverage.py --quick    # 40 draws (the CI smoke test)

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "frontier"))

from synthetic_truth import (  # noqa: E402
    BASE_LOG_MSE,
    BETAS,
    frontier_runs,
    sequential_slope,
    shift_decisions,
    slope_decisions,
)

from raysweep.frontier import claims as C  # noqa: E402
from raysweep.frontier import statistics as S  # noqa: E402


def pooled_rates(rng: np.random.Generator, draws: int, seeds: int, slope: float) -> tuple[float, float]:
    """(share of 'falls', coverage of the truth) of pooled OLS, seeds as independent replicates."""
    from synthetic_truth import slope_runs

    frame = slope_runs(rng, draws, seeds, slope)
    per = len(frame) // draws
    x, y = frame["lambda_neural"].to_numpy(), frame["rate"].to_numpy()
    falls = covered = 0
    for d in range(draws):
        part = slice(d * per, (d + 1) * per)
        low, high = S.fit_slope(x[part], y[part], None).interval(0.05)
        falls += high < 0
        covered += low <= slope <= high
    return falls / draws, covered / draws


def bootstrap_coverage(rng: np.random.Generator, draws: int, seeds: int, shift: float,
                       resamples: int = 1000) -> float:
    """Coverage of the old percentile bootstrap over seeds of the seed-averaged curves' shift."""
    frame = frontier_runs(rng, draws, seeds, shift)
    rate = frame["rate"].to_numpy(dtype=float).reshape(draws, seeds, 2, len(BETAS))
    log_mse = np.log(frame["mse"].to_numpy(dtype=float)).reshape(draws, seeds, 2, len(BETAS))
    covered = 0
    for d in range(draws):
        draws_idx = rng.integers(0, seeds, size=(resamples, seeds))
        values = []
        for pick in draws_idx:
            r, x = rate[d, pick].mean(axis=0), np.log(np.exp(log_mse[d, pick]).mean(axis=0))
            value, _ = C.average_rate_difference(x[0], r[0], x[1], r[1])
            if value is not None:
                values.append(value)
        low, high = np.percentile(values, [2.5, 97.5])
        covered += low <= shift <= high
    return covered / draws


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="40 draws, 50 bootstrap resamples (smoke test)")
    args = parser.parse_args()
    draws = 40 if args.quick else args.draws
    resamples = 50 if args.quick else 1000
    boot_draws = draws if args.quick else max(draws // 5, 40)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    rows = []
    for seeds in (2, 3, 4, 5):
        pooled_falls, pooled_cov = pooled_rates(rng, draws, seeds, -2.0)
        blocked = slope_decisions(rng, draws, seeds, -2.0)
        at_zero = slope_decisions(rng, draws, seeds, 0.0)
        shift0 = shift_decisions(rng, draws, seeds, 0.0)
        shift1 = shift_decisions(rng, draws, seeds, -1.5)
        row = {
            "seeds": seeds,
            "slope_falls_pooled": pooled_falls,
            "slope_falls_blocked": float(np.mean([v == "down" for v, _, _ in blocked])),
            "slope_coverage_pooled": pooled_cov,
            "slope_coverage_blocked": float(np.mean([lo <= -2.0 <= hi for _, lo, hi in blocked])),
            "slope_false_verdicts_at_0": float(np.mean([v in ("down", "up") for v, _, _ in at_zero])),
            "shift_coverage_bootstrap_at_0": bootstrap_coverage(rng, boot_draws, seeds, 0.0, resamples),
            "shift_coverage_paired_at_0": float(np.mean([lo <= 0.0 <= hi for _, lo, hi in shift0])),
            "shift_coverage_paired_at_-1.5": float(np.mean([lo <= -1.5 <= hi for _, lo, hi in shift1])),
            "shift_false_verdicts_at_0": float(np.mean([v in ("down", "up") for v, _, _ in shift0])),
        }
        rows.append(row)
        print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    overlap = []
    span = float(BASE_LOG_MSE[-1] - BASE_LOG_MSE[0])  # each curve's log-MSE span (1.4)
    for spread in (0.3, 0.6, 0.9, 1.1, 1.25):
        decisions = shift_decisions(rng, draws, 3, -1.5, spread=spread, min_overlap=0.0)
        kept = [(lo, hi) for v, lo, hi in decisions if v != "withheld"]
        overlap.append({"overlap_fraction": round((span - spread) / span, 3),
                        "coverage": float(np.mean([lo <= -1.5 <= hi for lo, hi in kept])) if kept else None})
        print(f"overlap {overlap[-1]['overlap_fraction']:.2f}: paired coverage {overlap[-1]['coverage']}", flush=True)
    runs = 100 if args.quick else 500
    at_zero = [sequential_slope(rng, 0.0) for _ in range(runs)]
    at_two = [sequential_slope(rng, -2.0) for _ in range(runs)]
    sequential = {
        "runs": runs, "false_verdicts_at_0": float(np.mean([v in ("down", "up") for v, _ in at_zero])),
        "falls_at_-2": float(np.mean([v == "down" for v, _ in at_two])),
        "mean_seeds_to_decision_at_-2": float(np.mean([s for _, s in at_two])),
        "mean_seeds_at_0": float(np.mean([s for _, s in at_zero])),
        "negligible_at_0": float(np.mean([v == "negligible" for v, _ in at_zero])),
    }
    print("sequential (3 seeds, +2 per round, at most 9):", sequential, flush=True)
    print(json.dumps({"draws": draws, "rows": rows, "overlap": overlap, "sequential": sequential,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
