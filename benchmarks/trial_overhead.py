"""Overhead of raysweep's Tune trials against bare Ray Tune and Ray Train trials doing the same training.

The same training (tiny vector VAE, 16x16 XYSquares, ``--steps`` optimiser steps, a validation
every ``--steps // 3``: raysweep's ``train()``) runs six ways on one local Ray instance of 2 CPUs:

- **bare**: a plain Tune function trial (one CPU) reporting each validation's metrics with
  ``tune.report`` (no Tune checkpoint); the anchor of the one-worker trial;
- **raysweep_1_worker**: ``run_sweep`` of a one-trial sweep (the loop in the trial process, every
  validation reported with its checkpoint persisted to the sweep directory, MLflow tracking on);
- **bare_ddp**: a plain Tune function trial (no CPU of its own) running a bare Ray Train v2
  ``TorchTrainer`` of 2 gloo workers (one CPU each) whose workers call ``train()`` and report with
  ``ray.train.report`` without checkpoints, forwarded to Tune by ``TuneReportCallback``; the anchor
  of the DDP trial;
- **raysweep_2_workers**: the one-trial sweep with ``resources.workers: 2`` (its TorchTrainer
  persists a checkpoint per validation);
- **bare_k** / **raysweep_k**: ``--trials`` (K) trials in one Tune run / one sweep (a grid over
  the seed), one CPU each, 2 at once.

Wall time is measured around each whole run (trial actor start-up included); the kinds run in turn
``--repeats`` times, rotated so machine noise hits all alike, and medians are compared. From a
one-trial run (wall W1) and a K-trial run (WK) of the same kind: **per trial** = (WK - W1) / (K - 1),
what each further trial costs (median over repeats of the paired runs), and **once** = W1 - per
trial, what a run pays whatever its size
(Tune start, for raysweep also the sweep file, MLflow experiment and parent run, the summary).
Goals: raysweep_2_workers <= 1.1x bare_ddp; raysweep per trial <= 1.1x bare per trial.

``loop_s`` is the loop's own training time (``final.json`` seconds), ``trial_s`` Ray's own timing of
the trial (``time_total_s`` of its last result: trial start to last report), ``peak_rss_mb`` the
peak of the summed resident memory of the trial's processes (the trial actor and, for DDP, the
Train controller and worker actors: every ``ray::`` process of this Ray instance but Ray's own
agents and idle workers), sampled every 0.2 s.

    python benchmarks/trial_overhead.py                # 300 steps, K = 4, 3 repeats
    python benchmarks/trial_overhead.py --quick        # 12 steps, K = 2, 1 repeat (smoke test)

Prints a table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from tiny_trial import tiny_trial_tree  # noqa: E402  (the tests' tiny trial, defined once)

#: Ray's own processes, which no trial owns: left out of a trial's memory.
RAY_AGENTS = ("ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")
RAY_CPUS = 2  # one CPU per trial, 2 at once; or the 2 workers of one DDP trial
SINGLE_KINDS = ("bare", "raysweep_1_worker", "bare_ddp", "raysweep_2_workers")
MULTI_KINDS = ("bare_k", "raysweep_k")


# ------------------------------------------------------------------------------ memory
class PeakMemory:
    """Peak summed RSS (bytes) of this Ray instance's trial processes, sampled in a thread.

    Ray's worker processes descend from this driver (it started the raylet), and a worker that
    runs an actor retitles itself ``ray::<Actor>``: those, less Ray's agents, are the trial's."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil, self._interval = psutil, interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _trial_rss(self) -> int:
        total = 0
        for proc in self._psutil.Process().children(recursive=True):
            try:
                title = " ".join(proc.cmdline())
                if title.startswith("ray::") and not title.startswith(RAY_AGENTS):
                    total += proc.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied, self._psutil.ZombieProcess):
                continue
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._trial_rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# ----------------------------------------------------------------------------- anchors
def seeded(config: dict[str, Any]) -> dict[str, Any]:
    """The trial mapping of a bare trial's config, with its seed when the run sweeps seeds."""
    trial = json.loads(json.dumps(config["trial"]))
    if "seed" in config:
        trial["train"]["seed"] = config["seed"]
    return trial


def bare_trial(config: dict[str, Any]) -> None:
    """The one-worker anchor: a plain Tune function trial running the same training loop."""
    import torch
    from ray import tune

    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train

    torch.set_num_threads(1)
    out = Path(config["out_dir"]) / tune.get_context().get_trial_id()
    train(trial_config_from_dict(seeded(config)), out, report=lambda m, _c: tune.report(m), progress=False)


def bare_ddp_worker(loop_config: dict[str, Any]) -> None:
    """One Ray Train worker of the DDP anchor: the loop under the process group Ray set up."""
    import ray.train
    import torch

    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train

    torch.set_num_threads(1)
    train(trial_config_from_dict(loop_config["trial"]), loop_config["out_dir"],
          report=lambda m, _c: ray.train.report(m), progress=False)


def bare_ddp_trial(config: dict[str, Any]) -> None:
    """The DDP anchor: a plain Tune function trial running a bare 2-worker gloo TorchTrainer."""
    import ray.train  # Train v2: Ray 2.60's default, left to it (a bare user sets no RAY_TRAIN_* variable)
    from ray import tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = tune.get_context().get_trial_id()
    trainer = TorchTrainer(
        bare_ddp_worker,
        train_loop_config={"trial": seeded(config), "out_dir": str(Path(config["out_dir"]) / trial_id)},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(name="ray_train", storage_path=str(Path(config["out_dir"]) / "train_runs" / trial_id),
                                       callbacks=[TuneReportCallback()]),
    )
    trainer.fit()


def last_result(trial_dir: Path) -> dict[str, Any]:
    """The last line of a Tune trial's ``result.json``."""
    return json.loads((trial_dir / "result.json").read_text().strip().splitlines()[-1])


def run_bare(trial: dict[str, Any], folder: Path, name: str, ddp: bool = False, trials: int = 1) -> dict[str, float]:
    """A bare Tune run of `trials` trials (one CPU each, 2 at once; or 2-worker DDP anchors)."""
    from ray import tune

    out_dir = folder / f"{name}_out"
    space: dict[str, Any] = {"trial": trial, "out_dir": str(out_dir)}
    if trials > 1:
        space["seed"] = tune.grid_search(list(range(trials)))
    # The DDP anchor's trial only waits on its TorchTrainer: like raysweep's driver, no CPU of its own.
    resources = {"cpu": 0, "memory": 64 * 1024**2} if ddp else {"cpu": 1}
    started = time.perf_counter()
    tuner = tune.Tuner(
        tune.with_resources(bare_ddp_trial if ddp else bare_trial, resources), param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=2),
        run_config=tune.RunConfig(name=name, storage_path=str(folder), verbose=0),
    )
    results = tuner.fit()
    wall = time.perf_counter() - started
    if results.errors:
        raise RuntimeError(f"bare run {name} failed: {results.errors[0]}")
    ids = [r.metrics["trial_id"] for r in results]
    loops = [json.loads((out_dir / i / "final.json").read_text())["seconds"] for i in ids]
    return {"wall_s": wall, "loop_s": statistics.mean(loops),
            "trial_s": statistics.mean(last_result(Path(r.path))["time_total_s"] for r in results)}


def run_raysweep(trial: dict[str, Any], folder: Path, name: str, workers: int = 1, trials: int = 1) -> dict[str, float]:
    """A raysweep sweep of `trials` trials (a grid over the seed) of `workers` DDP workers each."""
    from raysweep.tune.load import sweep_from_dict
    from raysweep.tune.run import run_sweep

    raw: dict[str, Any] = {"name": name, "trial": trial, "resources": {"workers": workers, "cpus_per_worker": 1}}
    if trials > 1:
        raw["search"] = {"mode": "grid", "grid": {"train.seed": list(range(trials))}}
    sweep = sweep_from_dict(raw)
    started = time.perf_counter()
    outcome = run_sweep(sweep, storage=str(folder), verbose=0)
    wall = time.perf_counter() - started
    if len(outcome.rows) != trials or any(row["status"] != "finished" for row in outcome.rows):
        raise RuntimeError(f"sweep {name}: trials ended {[row['status'] for row in outcome.rows]}")
    outputs = [Path(row["outputs"]) for row in outcome.rows]  # <sweep dir>/<trial dir>/train
    return {"wall_s": wall,
            "loop_s": statistics.mean(json.loads((o / "final.json").read_text())["seconds"] for o in outputs),
            "trial_s": statistics.mean(last_result(o.parent)["time_total_s"] for o in outputs)}


# -------------------------------------------------------------------------------- main
def measure(runner: Callable[[], dict[str, float]]) -> dict[str, float]:
    """One run with the peak memory of its trial processes."""
    with PeakMemory() as memory:
        row = runner()
    row["peak_rss_mb"] = memory.peak / 1024**2
    return row


def summarize_runs(kinds: dict[str, list[dict[str, float]]], trials: int) -> dict[str, Any]:
    """Medians per kind, the ratios against the anchors, and the once / per-trial split."""
    summary: dict[str, Any] = {}
    for kind, runs in kinds.items():
        med = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
        summary[kind] = {**{k: round(v, 2) for k, v in med.items()}, "overhead_s": round(med["wall_s"] - med["loop_s"], 2),
                         "walls_s": [round(run["wall_s"], 2) for run in runs]}
    for prefix, single in (("bare", "bare"), ("raysweep", "raysweep_1_worker")):
        # Paired by repeat (the K-trial run beside its one-trial run): the load of a shared machine
        # drifts between repeats far more than within one.
        pairs = [(one["wall_s"], many["wall_s"]) for one, many in zip(kinds[single], kinds[f"{prefix}_k"], strict=True)]
        per_trial = statistics.median((many - one) / (trials - 1) for one, many in pairs)
        summary[f"{prefix}_per_trial_s"] = round(per_trial, 2)
        summary[f"{prefix}_once_s"] = round(statistics.median(one for one, _ in pairs) - per_trial, 2)
    summary["ratio_1_worker"] = round(summary["raysweep_1_worker"]["wall_s"] / summary["bare"]["wall_s"], 3)
    summary["ratio_2_workers_vs_bare_ddp"] = round(
        summary["raysweep_2_workers"]["wall_s"] / summary["bare_ddp"]["wall_s"], 3)
    summary["ratio_2_workers_vs_bare"] = round(summary["raysweep_2_workers"]["wall_s"] / summary["bare"]["wall_s"], 3)
    summary["ratio_per_trial"] = round(summary["raysweep_per_trial_s"] / max(summary["bare_per_trial_s"], 1e-9), 3)
    return summary


def print_table(summary: dict[str, Any], trials: int) -> None:
    print(f"\n{'kind':<20}{'wall s':>9}{'trial s':>9}{'loop s':>9}{'overhead s':>12}{'peak RSS MB':>13}")
    for kind in (*SINGLE_KINDS, *MULTI_KINDS):
        row = summary[kind]
        print(f"{kind:<20}{row['wall_s']:>9.2f}{row['trial_s']:>9.2f}{row['loop_s']:>9.2f}{row['overhead_s']:>12.2f}"
              f"{row['peak_rss_mb']:>13.0f}")
    print(f"\n{'':<20}{'once s':>9}{'per trial s':>13}   (from 1 and {trials} trials, 2 at once)")
    for prefix in ("bare", "raysweep"):
        print(f"{prefix:<20}{summary[f'{prefix}_once_s']:>9.2f}{summary[f'{prefix}_per_trial_s']:>13.2f}")
    ddp, per_trial = summary["ratio_2_workers_vs_bare_ddp"], summary["ratio_per_trial"]
    print(f"\nraysweep DDP trial / bare TorchTrainer-in-Tune trial = {ddp:.3f} "
          f"({'within' if ddp <= 1.1 else 'ABOVE'} the 1.1x goal)")
    print(f"raysweep per-trial cost / bare Tune per-trial cost = {per_trial:.3f} "
          f"({'within' if per_trial <= 1.1 else 'ABOVE'} the 1.1x goal)")
    print(f"one-worker raysweep trial / bare Tune trial (one-trial runs, once-costs included) = "
          f"{summary['ratio_1_worker']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimiser steps per trial")
    parser.add_argument("--trials", type=int, default=4, help="K: trials of the multi-trial runs (>= 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind (medians compared)")
    parser.add_argument("--quick", action="store_true", help="12 steps, K = 2, 1 repeat (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.trials, args.repeats = 12, 2, 1
    if args.trials < 2:
        parser.error("--trials must be at least 2 (the per-trial cost is the difference of K trials and 1)")
    trial = tiny_trial_tree(**{"train.max_steps": args.steps, "train.val_every": max(1, args.steps // 3)})

    import ray

    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    ray_started = time.perf_counter()
    ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, log_to_driver=False)
    ray_start_s = time.perf_counter() - ray_started
    kinds: dict[str, list[dict[str, float]]] = {kind: [] for kind in (*SINGLE_KINDS, *MULTI_KINDS)}
    with tempfile.TemporaryDirectory(prefix="trial_overhead_") as tmp:
        folder = Path(tmp)
        warm = tiny_trial_tree(**{"train.max_steps": 4, "train.val_every": 4})
        run_bare(warm, folder, "warmup")  # untimed: the first trial of a fresh Ray pays its worker start-up
        k = args.trials
        runners: dict[str, Callable[[int], dict[str, float]]] = {
            "bare": lambda r: run_bare(trial, folder, f"bare{r}"),
            "raysweep_1_worker": lambda r: run_raysweep(trial, folder, f"one{r}"),
            "bare_ddp": lambda r: run_bare(trial, folder, f"bareddp{r}", ddp=True),
            "raysweep_2_workers": lambda r: run_raysweep(trial, folder, f"ddp{r}", workers=2),
            "bare_k": lambda r: run_bare(trial, folder, f"barek{r}", trials=k),
            "raysweep_k": lambda r: run_raysweep(trial, folder, f"sweepk{r}", trials=k),
        }
        order = list(runners)
        for r in range(args.repeats):
            shift = r % len(order)
            for kind in order[shift:] + order[:shift]:  # rotate, so no kind always runs first
                kinds[kind].append(measure(lambda kind=kind, r=r: runners[kind](r)))
            print(f"repeat {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1]['wall_s']:.1f} s" for k, v in kinds.items()),
                  flush=True)
    ray.shutdown()

    summary = {"steps": args.steps, "trials": args.trials, "repeats": args.repeats, "ray_cpus": RAY_CPUS,
               "cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
               "ray_start_s": round(ray_start_s, 2), **summarize_runs(kinds, args.trials)}
    print_table(summary, args.trials)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
