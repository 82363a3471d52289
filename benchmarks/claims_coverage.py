"""Error rates of the claims' statistics at the seed counts people use, by simulation.

On a synthetic truth with seeds shared across lambda (tests/frontier/synthetic_truth.py: a seed
offset of sd 2 shared by the seed's runs, residual sd 0.5, lambda in {0, .25, .5, .75, 1}) and a
seed x lambda interaction (each seed's own slope differs from the mean slope by N(0, tau^2)), this
measures at 3, 5 and 9 seeds and tau in {0, 0.5, 1, 2}:

- claim 1: the two-stage interval (the product's: per-seed OLS slopes, t over seeds) against the
  seed-blocked one (the method before it, now a diagnostic): coverage of the mean slope and false
  falls/rises at a mean slope of 0, false "negligible" at a mean slope on the margin's edge (-1,
  margin 1), and the power to find a mean slope of -2 (what validity costs);
- the paired frontier shift's coverage at shifts of 0 and -1.5 nats at 3, 5 and 9 seeds, with each
  seed's own shift off the mean by N(0, shift_sd^2) for shift_sd 0 and 1, and its
  coverage by how much of the narrower curve's span the two curves share (what
  :data:`raysweep.frontier.claims.MIN_OVERLAP` was chosen from);
- ``--until-decided`` (3 seeds first, 2 per round, at most 9, Bonferroni over 4 looks) at tau 0 and
  1: false verdicts at no slope over sequential runs, and the share and mean seeds to a decision at
  a slope of -2.

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
    sequential_slope,
    shift_decisions,
    slope_decisions,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="40 draws per cell (smoke test)")
    args = parser.parse_args()
    draws = 40 if args.quick else args.draws
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    rows = []

    def share(decisions: list, hit) -> float:
        return float(np.mean([hit(v, lo, hi) for v, lo, hi in decisions]))

    for tau in (0.0, 0.5, 1.0, 2.0):
        for seeds in (3, 5, 9):
            row: dict[str, float | int] = {"tau": tau, "seeds": seeds}
            for method, blocked in (("blocked", True), ("two_stage", False)):
                at_zero = slope_decisions(rng, draws, seeds, 0.0, tau=tau, blocked=blocked)
                on_edge = slope_decisions(rng, draws, seeds, -1.0, tau=tau, blocked=blocked)
                at_two = slope_decisions(rng, draws, seeds, -2.0, tau=tau, blocked=blocked)
                row[f"coverage_{method}"] = share(at_zero, lambda v, lo, hi: lo <= 0.0 <= hi)
                row[f"false_direction_{method}"] = share(at_zero, lambda v, lo, hi: v in ("down", "up"))
                row[f"false_negligible_at_edge_{method}"] = share(on_edge, lambda v, lo, hi: v == "negligible")
                row[f"power_at_-2_{method}"] = share(at_two, lambda v, lo, hi: v == "down")
            rows.append(row)
            print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    for shift_sd, seeds in ((sd, k) for sd in (0.0, 1.0) for k in (3, 5, 9)):
        shift0 = shift_decisions(rng, draws, seeds, 0.0, shift_sd=shift_sd)
        shift1 = shift_decisions(rng, draws, seeds, -1.5, shift_sd=shift_sd)
        row = {"shift_sd": shift_sd, "seeds": seeds,
               "shift_coverage_paired_at_0": share(shift0, lambda v, lo, hi: lo <= 0.0 <= hi),
               "shift_coverage_paired_at_-1.5": share(shift1, lambda v, lo, hi: lo <= -1.5 <= hi),
               "shift_false_verdicts_at_0": share(shift0, lambda v, lo, hi: v in ("down", "up"))}
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
    sequential = []
    for tau in (0.0, 1.0):
        at_zero = [sequential_slope(rng, 0.0, tau=tau) for _ in range(runs)]
        at_two = [sequential_slope(rng, -2.0, tau=tau) for _ in range(runs)]
        sequential.append({
            "tau": tau, "runs": runs, "false_verdicts_at_0": float(np.mean([v in ("down", "up") for v, _ in at_zero])),
            "falls_at_-2": float(np.mean([v == "down" for v, _ in at_two])),
            "mean_seeds_to_decision_at_-2": float(np.mean([s for _, s in at_two])),
            "mean_seeds_at_0": float(np.mean([s for _, s in at_zero])),
            "negligible_at_0": float(np.mean([v == "negligible" for v, _ in at_zero])),
        })
        print("sequential (3 seeds, +2 per round, at most 9):", sequential[-1], flush=True)
    print(json.dumps({"draws": draws, "rows": rows, "overlap": overlap, "sequential": sequential,
                      "seconds": round(time.perf_counter() - start, 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
