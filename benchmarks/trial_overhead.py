"""Per-trial overhead of raysweep's Tune trials against a bare Ray Tune function trial.

Three ways to run the same training (tiny vector VAE, 16x16 XYSquares, ``--steps`` optimiser steps,
a validation every ``--steps // 3``), each as a one-trial Tune run on the same local Ray instance:

- **bare**: a plain Tune function trial (one CPU) calling raysweep's ``train()`` and reporting the
  metrics of each validation with ``tune.report`` (no Tune checkpoint);
- **raysweep 1 worker**: ``run_sweep`` of a one-trial sweep (the loop in the trial process, every
  validation reported with its checkpoint persisted to the sweep directory);
- **raysweep 2 workers**: the same sweep with ``resources.workers: 2``: a Ray Train v2
  ``TorchTrainer`` with two DDP workers over gloo, reports forwarded to Tune.

Wall time is measured around each whole run (trial actor start-up included); the three run in turn
``--repeats`` times so machine noise hits all alike, and the medians are compared. Ratios are
raysweep / bare (goal: one worker within 1.2x). ``overhead_s`` is wall time minus the loop's own
training time (``final.json`` seconds).

    python benchmarks/trial_overhead.py                # 600 steps, 3 repeats
    python benchmarks/trial_overhead.py --quick        # 60 steps, 1 repeat (smoke test)

Prints a table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_trial import tiny_trial_tree  # noqa: E402  (the tests' tiny trial, defined once)

#: The tiny trial at 600 steps, a validation every 200.
TRIAL: dict[str, Any] = tiny_trial_tree(**{"train.max_steps": 600, "train.val_every": 200})


def bare_trial(config: dict[str, Any]) -> None:
    """The baseline: a plain Tune function trial running the same training loop."""
    import torch
    from ray import tune

    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train

    torch.set_num_threads(1)
    out = Path(config["out_dir"]) / tune.get_context().get_trial_id()
    train(trial_config_from_dict(config["trial"]), out, report=lambda m, _c: tune.report(m), progress=False)


def run_bare(trial: dict[str, Any], folder: Path, name: str) -> tuple[float, float]:
    """Wall seconds of a one-trial bare Tune run, and the loop's own training seconds."""
    from ray import tune

    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": 1}),
        param_space={"trial": trial, "out_dir": str(folder / "bare_out")},
        run_config=tune.RunConfig(name=name, storage_path=str(folder), verbose=0),
    )
    result = tuner.fit()[0]
    wall = time.perf_counter() - started
    final = json.loads((folder / "bare_out" / result.metrics["trial_id"] / "final.json").read_text())
    return wall, float(final["seconds"])


def run_raysweep(trial: dict[str, Any], folder: Path, name: str, workers: int) -> tuple[float, float]:
    """Wall seconds of a one-trial raysweep sweep with `workers` DDP workers, and the loop's seconds."""
    from raysweep.tune.load import sweep_from_dict
    from raysweep.tune.run import run_sweep

    sweep = sweep_from_dict({"name": name, "trial": trial, "resources": {"workers": workers, "cpus_per_worker": 1}})
    started = time.perf_counter()
    outcome = run_sweep(sweep, storage=str(folder), verbose=0)
    wall = time.perf_counter() - started
    [row] = outcome.rows
    if row["status"] != "finished":
        raise RuntimeError(f"the {workers}-worker trial ended {row['status']}")
    final = json.loads((Path(row["outputs"]) / "final.json").read_text())
    return wall, float(final["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per trial")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (medians compared)")
    parser.add_argument("--quick", action="store_true", help="60 steps, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats = 60, 1
    trial = json.loads(json.dumps(TRIAL))
    trial["train"].update(max_steps=args.steps, val_every=max(1, args.steps // 3))

    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ray.init(address="local", num_cpus=max(2, cpus), include_dashboard=False, log_to_driver=False)
    kinds = {"bare": [], "raysweep_1_worker": [], "raysweep_2_workers": []}
    with tempfile.TemporaryDirectory(prefix="trial_overhead_") as tmp:
        folder = Path(tmp)
        warm = json.loads(json.dumps(trial))
        warm["train"].update(max_steps=10, val_every=10)
        run_bare(warm, folder, "warmup")  # untimed: the first trial of a fresh Ray pays its worker start-up
        runners = {
            "bare": lambda r: run_bare(trial, folder, f"bare{r}"),
            "raysweep_1_worker": lambda r: run_raysweep(trial, folder, f"one{r}", workers=1),
            "raysweep_2_workers": lambda r: run_raysweep(trial, folder, f"ddp{r}", workers=2),
        }
        order = list(runners)
        for r in range(args.repeats):
            for kind in order[r % 3:] + order[: r % 3]:  # rotate, so no kind always runs first
                kinds[kind].append(runners[kind](r))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1][0]:.1f} s" for k, v in kinds.items()),
                  flush=True)
    ray.shutdown()

    summary: dict[str, Any] = {"steps": args.steps, "repeats": args.repeats, "cpus": cpus}
    for kind, runs in kinds.items():
        wall = statistics.median(w for w, _ in runs)
        loop = statistics.median(s for _, s in runs)
        summary[kind] = {"wall_s": round(wall, 2), "loop_s": round(loop, 2), "overhead_s": round(wall - loop, 2),
                         "walls_s": [round(w, 2) for w, _ in runs]}
    bare = summary["bare"]["wall_s"]
    summary["ratio_1_worker"] = round(summary["raysweep_1_worker"]["wall_s"] / bare, 3)
    summary["ratio_2_workers"] = round(summary["raysweep_2_workers"]["wall_s"] / bare, 3)
    print(f"\n{'kind':<20}{'wall s':>9}{'loop s':>9}{'overhead s':>12}{'ratio':>8}")
    for kind in kinds:
        ratio = summary[kind]["wall_s"] / bare
        row = summary[kind]
        print(f"{kind:<20}{row['wall_s']:>9.2f}{row['loop_s']:>9.2f}{row['overhead_s']:>12.2f}{ratio:>8.2f}")
    verdict = "within" if summary["ratio_1_worker"] <= 1.2 else "ABOVE"
    print(f"\none-worker raysweep trial / bare Tune trial = {summary['ratio_1_worker']:.3f} ({verdict} the 1.2x goal); "
          f"2-worker DDP trial / bare = {summary['ratio_2_workers']:.3f}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
