"""Compute to find matched-rate operating points: bisection, optuna and GECO against a beta grid.

Tiny vector VAE on 16x16 XYSquares (two 4-pixel squares on a 4x4 grid, 6 latent dimensions,
batch 16, 192 training images = 12 steps per epoch), loss = (1 - lambda) SSE + lambda box blur
(balanced), a few lambda cells x rate targets. Every strategy runs under real Ray Tune on this
machine (one CPU per trial, actors reused) and is charged the epochs of every trial it started,
stopped ones included. For each it reports how many (cell, target) pairs ended within the relative
``--tolerance`` and the total epochs.

The grid is the baseline the adaptive strategies must beat: log-spaced betas over the same initial
bracket, at the *same final resolution*: its spacing in log beta is ``2 * tolerance / |slope|``
at the steepest (cell, target), where slope = d log R / d log beta is measured from the two
bisection trials that bracket each target most tightly. That is the coarsest grid that puts a point
within tolerance of every target if the rate were locally linear in log beta. Every grid trial
trains to the end (a grid does not know which trials will matter), so its cost is exact without
running it; it is also run (unless ``--grid cost`` or larger than ``--grid-max-trials``) to report
how many targets it actually hits.

GECO (``objective.geco.target_rate``) trains once per (cell, target); a run that ends outside the
tolerance is run again at twice the length (then four times), and all of it is counted.

    python benchmarks/matched_rate.py                 # 3 lambdas x 2 targets (8, 14 nats), 600 steps per trial
    python benchmarks/matched_rate.py --quick         # 2 lambdas x 1 target, 300 steps, grid cost counted only

Prints a table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from typing import Any

import ray
from ray import tune

from raysweep.tune.matched_rate import MatchedRateSearch, build_matched_rate_plan, cell_label, train_trainable
from raysweep.tune.operating_points import META_KEY, derive_operating_points, within_tolerance


def base_trial(steps: int, val_every: int) -> dict[str, Any]:
    """The tiny trial (as in tests/conftest.py) with the box-blur term, nested dict."""
    return {
        "data": {"dataset": "xysquares", "image_size": 16, "val_size": 64,
                 "xysquares": {"square_size": 4, "num_squares": 2}},
        "model": {"arch": "vector_vae", "preset": "tiny", "latent_dim": 6},
        "loss": {"neural": "box_blur", "lambda_neural": 0.0},
        "objective": {"beta": 0.0625, "geco": {"step_size": 0.02, "ema_decay": 0.9}},
        "train": {"max_steps": steps, "batch_size": 16, "lr": 2e-3, "val_every": val_every, "seed": 0},
    }


def run_tuner(param_space: dict[str, Any], storage: str, name: str, **tune_config: Any) -> Any:
    run_config = tune.RunConfig(storage_path=storage, name=name, verbose=0,
                                stop=tune_config.pop("stop", None))
    tuner = tune.Tuner(train_trainable, param_space=param_space, run_config=run_config,
                       tune_config=tune_config.pop("config"))
    return tuner.fit()


def summary(points: list, seconds: float) -> dict[str, Any]:
    return {"matched": sum(p.within_tolerance for p in points), "tasks": len(points),
            "trials": sum(p.trials for p in points), "epochs": sum(p.epochs for p in points),
            "seconds": round(seconds, 1),
            "points": [{"cell": p.cell, "target": p.target_rate, "beta": p.beta, "rate": p.rate,
                        "trials": p.trials, "epochs": p.epochs} for p in points]}


def run_adaptive(strategy: str, args: argparse.Namespace, cells: list[dict], storage: str) -> tuple[dict, Any]:
    search = MatchedRateSearch(targets=args.targets, tolerance=args.tolerance, strategy=strategy,
                               beta_min=args.beta_min, beta_max=args.beta_max, probes=args.probes,
                               max_trials=args.optuna_max_trials if strategy == "optuna" else args.max_trials,
                               stopped_trials=args.stopped_trials,
                               early_stopping=True if strategy == "optuna" else args.asha_bisection,
                               grace_period=args.grace_period)
    plan = build_matched_rate_plan(search, cells, reports_per_trial=args.steps // args.val_every)
    started = time.perf_counter()
    results = run_tuner(base_trial(args.steps, args.val_every), storage, strategy, stop=plan.stopper,
                        config=plan.tune_config(reuse_actors=True))
    points = derive_operating_points(results, args.tolerance)
    return summary(points, time.perf_counter() - started), results


def run_geco(args: argparse.Namespace, cells: list[dict], storage: str) -> dict:
    """GECO per (cell, target); runs outside the tolerance are redone at 2x, then 4x the length."""
    started = time.perf_counter()
    todo = [(cell, target) for cell in cells for target in args.targets]
    records: dict[tuple[str, float], dict] = {}
    for factor in (1, 2, 4):
        if not todo:
            break
        steps = args.steps * factor
        search = MatchedRateSearch(targets=args.targets, tolerance=args.tolerance, strategy="geco")
        for cell, target in todo:  # one Tuner per task: the failing tasks are not a cross product
            plan = build_matched_rate_plan(search.model_copy(update={"targets": [target]}), [cell], 1)
            results = run_tuner(base_trial(steps, steps // (args.steps // args.val_every)), storage,
                                f"geco_x{factor}_{len(records)}_{target}", config=plan.tune_config(reuse_actors=True))
            (point,) = derive_operating_points(results, args.tolerance)
            prev = records.get((point.cell, target), {"epochs": 0.0, "trials": 0})
            records[(point.cell, target)] = {"cell": point.cell, "target": target, "beta": point.beta,
                                             "rate": point.rate, "matched": point.within_tolerance,
                                             "epochs": prev["epochs"] + point.epochs,
                                             "trials": prev["trials"] + point.trials, "length": factor}
        todo = [(c, t) for c, t in todo if not records[(cell_label(c), t)]["matched"]]
    rows = list(records.values())
    return {"matched": sum(r["matched"] for r in rows), "tasks": len(rows), "trials": sum(r["trials"] for r in rows),
            "epochs": sum(r["epochs"] for r in rows), "seconds": round(time.perf_counter() - started, 1),
            "points": rows}


def grid_spacing(results: Any, args: argparse.Namespace) -> tuple[float, list[dict]]:
    """Log-beta spacing that resolves every target to the tolerance, from bisection's bracketing trials."""
    by_task: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for res in results:
        meta = res.config.get(META_KEY)
        if meta and res.metrics.get("progress", 0) >= 1.0:
            beta = res.config["objective"]["beta"]
            by_task.setdefault((meta["cell"], meta["target"]), []).append((math.log(beta), res.metrics["rate"]))
    slopes = []
    for (cell, target), obs in sorted(by_task.items()):
        above = [o for o in obs if o[1] >= target]
        below = [o for o in obs if o[1] < target]
        if not above or not below:
            continue
        (x1, r1), (x2, r2) = max(above), min(below)  # the tightest bracket around the target
        slope = (math.log(max(r2, 1e-3)) - math.log(max(r1, 1e-3))) / (x2 - x1)
        slopes.append({"cell": cell, "target": target, "slope": slope})
    steepest = max(abs(s["slope"]) for s in slopes) if slopes else 1.0
    return 2 * args.tolerance / steepest, slopes


def run_grid(args: argparse.Namespace, cells: list[dict], spacing: float, storage: str,
             epochs_per_trial: float) -> dict:
    """The beta grid at ``spacing`` (log beta) over the bracket, every trial to the end. Run unless
    ``--grid cost`` or it exceeds ``--grid-max-trials``; its cost is exact either way (every grid
    trial trains for ``epochs_per_trial``), only the hit count needs the run."""
    span = math.log(args.beta_max / args.beta_min)
    n = max(2, math.ceil(span / spacing) + 1)
    row = {"grid_points": n, "log_beta_spacing": spacing, "tasks": len(cells) * len(args.targets),
           "trials": n * len(cells), "epochs": n * len(cells) * epochs_per_trial, "seconds": 0.0,
           "matched": None, "ran": False}
    if args.grid == "cost" or n * len(cells) > args.grid_max_trials:
        return row
    betas = [args.beta_min * math.exp(span * i / (n - 1)) for i in range(n)]
    started = time.perf_counter()
    space = base_trial(args.steps, args.val_every)
    space["loss"]["lambda_neural"] = tune.grid_search([c["loss.lambda_neural"] for c in cells])
    space["objective"]["beta"] = tune.grid_search(betas)
    results = run_tuner(space, storage, "grid", config=tune.TuneConfig(reuse_actors=True))
    rates: dict[float, list[float]] = {}
    epochs = 0.0
    for res in results:
        rates.setdefault(res.config["loss"]["lambda_neural"], []).append(res.metrics["rate"])
        epochs += res.metrics["epoch"]
    hits = [{"lambda": lam, "target": t, "hit": any(within_tolerance(r, t, args.tolerance) for r in rs)}
            for lam, rs in sorted(rates.items()) for t in args.targets]
    row.update(matched=sum(h["hit"] for h in hits), trials=len(results), epochs=epochs, ran=True, hits=hits,
               seconds=round(time.perf_counter() - started, 1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 lambdas x 1 target, 300 steps")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.0, 0.5, 0.9])
    parser.add_argument("--targets", type=float, nargs="+", default=[8.0, 14.0], help="nats")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per trial (12 per epoch)")
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--tolerance", type=float, default=0.05)
    # Per-image betas (raysweep's convention): 0.01 to 10 per batch of 16.
    parser.add_argument("--beta-min", type=float, default=0.000625)
    parser.add_argument("--beta-max", type=float, default=0.625)
    parser.add_argument("--probes", type=int, default=2, help="trials in flight per (cell, target)")
    parser.add_argument("--max-trials", type=int, default=16, help="bisection trials per (cell, target)")
    parser.add_argument("--optuna-max-trials", type=int, default=40,
                        help="optuna trials per (cell, target): TPE needs ~15-20 to land within 5%% in 1-D")
    parser.add_argument("--grace-period", type=int, default=2)
    parser.add_argument("--stopped-trials", default="ignore", choices=["ignore", "rate_rises", "rate_falls"])
    parser.add_argument("--asha-bisection", action="store_true", help="also stop bisection trials early")
    parser.add_argument("--strategies", nargs="+", default=["bisection", "optuna", "geco", "grid"])
    parser.add_argument("--grid", choices=["run", "cost"], default=None,
                        help="run the grid (default) or only count its cost (default with --quick)")
    parser.add_argument("--grid-max-trials", type=int, default=150, help="count, do not run, a larger grid")
    parser.add_argument("--grid-spacing", type=float, default=None,
                        help="log-beta spacing of the grid (default: measured from the bisection run)")
    args = parser.parse_args()
    if args.quick:
        args.lambdas, args.targets, args.steps, args.val_every = [0.0, 0.9], [8.0], 300, 50
    args.grid = args.grid or ("cost" if args.quick else "run")
    if "grid" in args.strategies and "bisection" not in args.strategies and args.grid_spacing is None:
        parser.error("the grid's resolution is measured from the bisection run: keep bisection in "
                     "--strategies or pass --grid-spacing")

    cells = [{"loss.lambda_neural": lam} for lam in args.lambdas]
    ray.init(num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False)
    storage = tempfile.mkdtemp(prefix="raysweep-bench-mr-")
    rows: dict[str, dict] = {}
    bisection_results = None
    for strategy in args.strategies:
        if strategy in ("bisection", "optuna"):
            rows[strategy], results = run_adaptive(strategy, args, cells, storage)
            if strategy == "bisection":
                bisection_results = results
        elif strategy == "geco":
            rows["geco"] = run_geco(args, cells, storage)
        elif strategy == "grid":
            if args.grid_spacing is None:
                spacing, slopes = grid_spacing(bisection_results, args)
            else:
                spacing, slopes = args.grid_spacing, []
            epochs_per_trial = args.steps / 12  # 192 training images / batch 16 (see base_trial)
            rows["grid"] = run_grid(args, cells, spacing, storage, epochs_per_trial)
            rows["grid"]["slopes"] = slopes
        matched = "n/a" if rows[strategy]["matched"] is None else rows[strategy]["matched"]
        print(f"{strategy}: {matched}/{rows[strategy]['tasks']} matched, "
              f"{rows[strategy]['trials']} trials, {rows[strategy]['epochs']:.0f} epochs, "
              f"{rows[strategy]['seconds']} s", flush=True)
    ray.shutdown()

    grid_epochs = rows.get("grid", {}).get("epochs")
    print(f"\n{len(cells)} lambda cells x {len(args.targets)} targets {args.targets} nats, tolerance "
          f"{args.tolerance:.0%}, {args.steps} steps/trial ({args.steps / 12:.0f} epochs), "
          f"bracket [{args.beta_min}, {args.beta_max}]")
    print(f"{'strategy':<10} {'matched':>8} {'trials':>7} {'epochs':>8} {'seconds':>8} {'grid/this':>10}")
    for name, row in rows.items():
        ratio = f"{grid_epochs / row['epochs']:.2f}x" if grid_epochs and row["epochs"] else "-"
        matched = "n/a" if row["matched"] is None else row["matched"]
        print(f"{name:<10} {matched:>4}/{row['tasks']:<3} {row['trials']:>7} {row['epochs']:>8.0f} "
              f"{row['seconds']:>8} {ratio:>10}")
    if "grid" in rows:
        grid = rows["grid"]
        print(f"grid: {grid['grid_points']} betas per cell, log-beta spacing {grid['log_beta_spacing']:.3f}"
              + ("" if grid["ran"] else " (cost counted, not run: matched n/a)"))
    print(json.dumps({"args": vars(args), "results": rows}, default=str))


if __name__ == "__main__":
    main()
