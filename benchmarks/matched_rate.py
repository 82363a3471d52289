"""Compute to find matched-rate operating points: bisection, optuna and GECO against a beta grid.

Tiny vector VAE on 16x16 XYSquares (two 4-pixel squares on a 4x4 grid, 6 latent dimensions,
batch 16, 192 training images = 12 steps per epoch), loss = (1 - lambda) SSE + lambda box blur
(balanced), a few lambda cells x rate targets. Every strategy runs as a raysweep sweep through the
product's own path: a sweep mapping with ``search.mode: matched_rate`` (the grid: ``search.mode:
grid``) validated by ``sweep_from_dict`` and run by ``raysweep.tune.run.run_sweep`` on this machine
(one CPU per trial, actors reused, checkpoints and MLflow tracking as in any sweep), and is
charged the epochs of every trial it started, stopped ones included (the sweep's operating
points). For each it reports how many (cell, target) pairs ended within the relative
``--tolerance`` and the total epochs.

The grid is the baseline the adaptive strategies must beat: log-spaced betas over the same initial
bracket, at the *same final resolution*: its spacing in log beta is ``2 * tolerance / |slope|``
at the steepest (cell, target), where slope = d log R / d log beta is measured from the two
bisection trials that bracket each target most tightly. That is the coarsest grid that puts a point
within tolerance of every target if the rate were locally linear in log beta. Every grid trial
trains to the end (a grid does not know which trials will matter), so its cost is exact without
running it; it is also run (unless ``--grid cost`` or larger than ``--grid-max-trials``) to report
how many targets it actually hits.

GECO (``objective.geco.target_rate``) trains once per (cell, target, seed); a run that ends outside
the tolerance is run again at twice the length (then four times), and all of it is counted.

Bisection and optuna run ``--warm cold`` (``search.matched_rate.warm: false``: every (cell,
target) searched from scratch, as before warm starts), ``warm`` (each task starts from what its
neighbours learned, :mod:`raysweep.tune.matched_rate.warm`) or ``both``. ``--seeds 1 3`` runs every
strategy with one seed and again with ``search.seeds: [0, 1, 2]`` (an operating point per seed,
as claim 2 needs); the grid's cost with n seeds is n times the one-seed grid's.

    python benchmarks/matched_rate.py                 # 3 lambdas x 2 targets (8, 14 nats), 600 steps per trial
    python benchmarks/matched_rate.py --grid cost --warm both --seeds 1 3   # cold vs warm, 1 and 3 seeds
    python benchmarks/matched_rate.py --quick         # smoke test: 1 lambda x 1 target x 2 seeds, 36 steps,
                                                      # 2 trials per task, bisection cold and warm, optuna
                                                      # warm, GECO once, grid cost counted only

Prints a table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import ray

from raysweep.tune.load import sweep_from_dict
from raysweep.tune.matched_rate.points import cell_label, records_from_results, task_order, within_tolerance
from raysweep.tune.run import run_sweep
from raysweep.tune.summary import SweepOutcome

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_trial import tiny_trial_tree  # noqa: E402  (the tests' tiny trial, defined once)


def base_trial(steps: int, val_every: int) -> dict[str, Any]:
    """The tiny trial (tests/tiny_trial.py) with the box-blur term and a faster GECO controller."""
    return tiny_trial_tree(**{"loss.neural": "box_blur", "objective.geco.step_size": 0.02,
                              "objective.geco.ema_decay": 0.9, "train.max_steps": steps, "train.val_every": val_every})


def seed_list(n: int) -> list[int] | None:
    """``search.seeds`` for `n` seeds: none for one (the base trial's ``train.seed``, as before)."""
    return None if n == 1 else list(range(n))


def sweep(name: str, storage: str, trial: dict[str, Any], search: dict[str, Any]) -> SweepOutcome:
    """Validate and run one sweep through the product's sweep path (quiet: this script prints)."""
    config = sweep_from_dict({"name": name, "trial": trial, "search": search,
                              "resources": {"workers": 1, "cpus_per_worker": 1}}, source=name)
    return run_sweep(config, storage=storage, verbose=0)


def trial_results(outcome: SweepOutcome) -> list[dict[str, Any]]:
    """Every trial of a finished sweep as ``{"trial_id", "config", "metrics"}`` (its last result),
    read back from the sweep directory with Tune's ``ExperimentAnalysis``."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(outcome.sweep_dir)
    return [{"trial_id": t.trial_id, "config": dict(t.config), "metrics": dict(t.last_result or {}),
             "error": t.status == "ERROR"} for t in analysis.trials]


def matched_rate_search(cells: list[dict], targets: list[float], strategy: str, seeds: list[int] | None = None,
                        **block: Any) -> dict[str, Any]:
    """The ``search`` block of a matched-rate sweep over `cells` x `targets` (x `seeds`)."""
    return {"mode": "matched_rate", "cells": cells, **({"seeds": seeds} if seeds else {}),
            "matched_rate": {"targets": list(targets), "strategy": strategy, **block}}


def summary(points: list, seconds: float) -> dict[str, Any]:
    return {"matched": sum(p.within_tolerance for p in points), "tasks": len(points),
            "trials": sum(p.trials for p in points), "epochs": sum(p.epochs for p in points),
            "seconds": round(seconds, 1),
            "points": [{"cell": p.cell, "target": p.target_rate, "seed": p.seed, "beta": p.beta, "rate": p.rate,
                        "trials": p.trials, "epochs": p.epochs} for p in points]}


def run_adaptive(strategy: str, args: argparse.Namespace, cells: list[dict], storage: str, warm: bool,
                 seeds: int) -> tuple[dict, SweepOutcome]:
    block = dict(tolerance=args.tolerance, beta_min=args.beta_min, beta_max=args.beta_max, probes=args.probes,
                 max_trials=args.optuna_max_trials if strategy == "optuna" else args.max_trials,
                 stopped_trials=args.stopped_trials, warm=warm,
                 early_stopping=True if strategy == "optuna" else args.asha_bisection, grace_period=args.grace_period)
    started = time.perf_counter()
    outcome = sweep(f"{strategy}_{'warm' if warm else 'cold'}_{seeds}s", storage, base_trial(args.steps, args.val_every),
                    matched_rate_search(cells, args.targets, strategy, seed_list(seeds), **block))
    return summary(outcome.operating_points, time.perf_counter() - started), outcome


def run_geco(args: argparse.Namespace, cells: list[dict], storage: str, seeds: int) -> dict:
    """GECO per (cell, target, seed), all in one sweep; runs outside the tolerance are redone at 2x,
    then 4x the length (one sweep per task: the failing tasks are not a cross product)."""
    started = time.perf_counter()
    records: dict[tuple[str, float, int | None], dict] = {}
    labels = {cell_label(c): c for c in cells}

    def take(outcome: SweepOutcome, factor: int, cell: dict | None = None) -> None:
        for point in outcome.operating_points:
            label = cell_label(cell) if cell is not None else point.cell  # a one-cell sweep's cell is "base"
            key = (label, point.target_rate, point.seed)
            prev = records.get(key, {"epochs": 0.0, "trials": 0})
            records[key] = {"cell": label, "target": point.target_rate, "seed": point.seed, "beta": point.beta,
                            "rate": point.rate, "matched": point.within_tolerance,
                            "epochs": prev["epochs"] + point.epochs, "trials": prev["trials"] + point.trials,
                            "length": factor}

    for i, factor in enumerate(args.geco_lengths):
        steps = args.steps * factor
        trial = base_trial(steps, steps // (args.steps // args.val_every))
        if i == 0:
            take(sweep(f"geco_{seeds}s_x{factor}", storage, trial,
                       matched_rate_search(cells, args.targets, "geco", seed_list(seeds), tolerance=args.tolerance)),
                 factor, cells[0] if len(cells) == 1 else None)
            continue
        todo = [k for k, r in records.items() if not r["matched"]]
        for label, target, seed in todo:
            search = matched_rate_search([labels[label]], [target], "geco", None if seed is None else [seed],
                                         tolerance=args.tolerance)
            take(sweep(f"geco_{seeds}s_x{factor}_{label}_{target:g}_{seed}", storage, trial, search), factor,
                 labels[label])
    rows = list(records.values())
    return {"matched": sum(r["matched"] for r in rows), "tasks": len(rows), "trials": sum(r["trials"] for r in rows),
            "epochs": sum(r["epochs"] for r in rows), "seconds": round(time.perf_counter() - started, 1),
            "points": rows}


def grid_spacing(outcome: SweepOutcome, args: argparse.Namespace) -> tuple[float, list[dict]]:
    """Log-beta spacing that resolves every target to the tolerance, from bisection's bracketing trials."""
    by_task: dict[tuple[str, float, int | None], list[tuple[float, float]]] = {}
    for record in records_from_results(trial_results(outcome)):
        if record.converged:
            by_task.setdefault(record.task, []).append((math.log(record.beta), record.rate))
    slopes = []
    for (cell, target, _seed), obs in sorted(by_task.items(), key=lambda kv: task_order(kv[0])):
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
             epochs_per_trial: float, seeds: int = 1) -> dict:
    """The beta grid at ``spacing`` (log beta) over the bracket, every trial to the end. Run unless
    ``--grid cost`` or it exceeds ``--grid-max-trials``; its cost is exact either way (every grid
    trial trains for ``epochs_per_trial``), only the hit count needs the run."""
    span = math.log(args.beta_max / args.beta_min)
    n = max(2, math.ceil(span / spacing) + 1)
    row = {"grid_points": n, "log_beta_spacing": spacing, "tasks": len(cells) * len(args.targets) * seeds,
           "trials": n * len(cells) * seeds, "epochs": n * len(cells) * seeds * epochs_per_trial, "seconds": 0.0,
           "matched": None, "ran": False}
    if args.grid == "cost" or seeds > 1 or n * len(cells) > args.grid_max_trials:
        return row
    betas = [args.beta_min * math.exp(span * i / (n - 1)) for i in range(n)]
    started = time.perf_counter()
    search = {"mode": "grid", "grid": {"loss.lambda_neural": [c["loss.lambda_neural"] for c in cells],
                                       "objective.beta": betas}}
    results = trial_results(sweep("grid", storage, base_trial(args.steps, args.val_every), search))
    rates: dict[float, list[float]] = {}
    epochs = 0.0
    for res in results:
        rates.setdefault(res["config"]["loss.lambda_neural"], []).append(res["metrics"]["rate"])
        epochs += res["metrics"]["epoch"]
    hits = [{"lambda": lam, "target": t, "hit": any(within_tolerance(r, t, args.tolerance) for r in rs)}
            for lam, rs in sorted(rates.items()) for t in args.targets]
    row.update(matched=sum(h["hit"] for h in hits), trials=len(results), epochs=epochs, ran=True, hits=hits,
               seconds=round(time.perf_counter() - started, 1))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 lambda x 1 target x 2 seeds, 36 steps, 2 trials per task, GECO once")
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
    parser.add_argument("--geco-lengths", type=int, nargs="+", default=[1, 2, 4],
                        help="GECO run lengths (multiples of --steps) tried in turn until a task matches")
    parser.add_argument("--asha-bisection", action="store_true", help="also stop bisection trials early")
    parser.add_argument("--strategies", nargs="+", default=["bisection", "optuna", "geco", "grid"])
    parser.add_argument("--grid", choices=["run", "cost"], default=None,
                        help="run the grid (default) or only count its cost (default with --quick)")
    parser.add_argument("--grid-max-trials", type=int, default=150, help="count, do not run, a larger grid")
    parser.add_argument("--warm", choices=["cold", "warm", "both"], default="cold",
                        help="bisection and optuna from scratch per task (cold, as before), warm-started, or both")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1],
                        help="seeds per cell of each run, e.g. 1 3: every strategy with 1 seed, then with 3")
    parser.add_argument("--cold-seeds", type=int, nargs="+", default=None,
                        help="with --warm both, the seed counts also run cold (default: every one of --seeds)")
    parser.add_argument("--cold-strategies", nargs="+", default=["bisection", "optuna"],
                        help="with --warm both, the strategies also run cold (default: bisection and optuna)")
    parser.add_argument("--grid-spacing", type=float, default=None,
                        help="log-beta spacing of the grid (default: measured from the bisection run)")
    args = parser.parse_args()
    if args.quick:  # a smoke test of every strategy's path, not a measurement: seconds, not minutes
        args.lambdas, args.targets, args.steps, args.val_every = [0.0], [8.0], 36, 12
        args.max_trials, args.optuna_max_trials, args.geco_lengths = 2, 2, [1]
        # two seeds of one cell: per-seed points, and the second seed warm-started from the first
        args.warm, args.seeds, args.cold_seeds, args.cold_strategies = "both", [2], [2], ["bisection"]
    args.grid = args.grid or ("cost" if args.quick else "run")
    if "grid" in args.strategies and "bisection" not in args.strategies and args.grid_spacing is None:
        parser.error("the grid's resolution is measured from the bisection run: keep bisection in "
                     "--strategies or pass --grid-spacing")
    modes = {"cold": [False], "warm": [True], "both": [False, True]}[args.warm]
    # the grid's resolution is measured from the first cold bisection run (its bracketing trials)
    if "grid" in args.strategies and args.grid_spacing is None and (False not in modes or (
            len(modes) > 1 and "bisection" not in args.cold_strategies)):
        parser.error("the grid's resolution is measured from a cold bisection run: include --warm cold or "
                     "both (with bisection in --cold-strategies), or pass --grid-spacing")

    cells = [{"loss.lambda_neural": lam} for lam in args.lambdas]
    ray.init(address="local", num_cpus=os.cpu_count() or 2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    storage = tempfile.mkdtemp(prefix="raysweep-bench-mr-")
    rows: dict[str, dict] = {}
    bisection: SweepOutcome | None = None
    grid_rows: dict[int, dict] = {}
    for seeds in args.seeds:
        for strategy in args.strategies:
            names = []
            if strategy in ("bisection", "optuna"):
                for warm in modes:
                    if not warm and len(modes) > 1 and (strategy not in args.cold_strategies
                                                        or seeds not in (args.cold_seeds or args.seeds)):
                        continue
                    name = f"{strategy} {'warm' if warm else 'cold'} {seeds}s"
                    rows[name], outcome = run_adaptive(strategy, args, cells, storage, warm, seeds)
                    rows[name].update(strategy=strategy, warm=warm, seeds=seeds)
                    if strategy == "bisection" and not warm and bisection is None:
                        bisection = outcome
                    names.append(name)
            elif strategy == "geco":
                name = f"geco {seeds}s"
                rows[name] = run_geco(args, cells, storage, seeds)
                rows[name].update(strategy="geco", warm=False, seeds=seeds)
                names.append(name)
            elif strategy == "grid":
                if args.grid_spacing is None:
                    assert bisection is not None
                    spacing, slopes = grid_spacing(bisection, args)
                else:
                    spacing, slopes = args.grid_spacing, []
                epochs_per_trial = args.steps / 12  # 192 training images / batch 16 (see base_trial)
                name = f"grid {seeds}s"
                rows[name] = run_grid(args, cells, spacing, storage, epochs_per_trial, seeds)
                rows[name].update(strategy="grid", warm=False, seeds=seeds, slopes=slopes)
                grid_rows[seeds] = rows[name]
                names.append(name)
            for name in names:
                row = rows[name]
                matched = "n/a" if row["matched"] is None else row["matched"]
                print(f"{name}: {matched}/{row['tasks']} matched, {row['trials']} trials, {row['epochs']:.0f} epochs, "
                      f"{row['seconds']} s", flush=True)
    ray.shutdown()

    print(f"\n{len(cells)} lambda cells x {len(args.targets)} targets {args.targets} nats, tolerance "
          f"{args.tolerance:.0%}, {args.steps} steps/trial ({args.steps / 12:.0f} epochs), "
          f"bracket [{args.beta_min}, {args.beta_max}]")
    print(f"{'strategy':<20} {'matched':>8} {'trials':>7} {'epochs':>8} {'seconds':>8} {'grid/this':>10} {'vs 1 seed':>9}")
    for name, row in rows.items():
        grid_epochs = grid_rows.get(row["seeds"], {}).get("epochs")
        ratio = f"{grid_epochs / row['epochs']:.2f}x" if grid_epochs and row["epochs"] else "-"
        row["grid_ratio"] = grid_epochs / row["epochs"] if grid_epochs and row["epochs"] else None
        one = rows.get(name.rsplit(" ", 1)[0] + " 1s")
        scale = f"{row['epochs'] / one['epochs']:.2f}x" if one and one["epochs"] and row["seeds"] > 1 else "-"
        matched = "n/a" if row["matched"] is None else row["matched"]
        print(f"{name:<20} {matched:>4}/{row['tasks']:<3} {row['trials']:>7} {row['epochs']:>8.0f} "
              f"{row['seconds']:>8} {ratio:>10} {scale:>9}")
    for seeds, grid in grid_rows.items():
        print(f"grid {seeds}s: {grid['grid_points']} betas per cell and seed, log-beta spacing "
              f"{grid['log_beta_spacing']:.3f}" + ("" if grid["ran"] else " (cost counted, not run: matched n/a)"))
    print(json.dumps({"args": vars(args), "results": rows}, default=str))


if __name__ == "__main__":
    main()
