"""GPU benchmarks in one run: training step against a bare bf16 loop, fractional-GPU packing, NCCL DDP.

Three measurements, each against its anchor, on the CUDA machine this runs on (under 8 minutes):

1. **train step**: images/s of raysweep's training step (``Trainer.train_step``) against a bare
   hand-written bf16 loop on the same model and batch (``benchmarks/train_step.py``, reused), for
   the paper presets of ``autoencoder_kl`` and ``vector_vae`` (``search_spaces/paper_*.yaml``) at 64
   and 256 px in bf16 autocast. Goal: raysweep / bare >= 0.9.
2. **fractional**: the trial of ``search_spaces/fractional_gpu.yaml`` (tiny vector VAE, 64 px) as
   raysweep sweeps: 4 trials at 0.25 GPU each (one sweep, 4 at once) against 1 trial on the whole
   GPU; total images/s = images trained by every trial / sweep wall time. Goal: >= 2.5x.
3. **ddp**: a 2-worker NCCL DDP trial (``resources.workers: 2``, one GPU each) of the paper
   ``vector_vae`` at 64 px against the same trial on one GPU (global images/s), when 2 GPUs exist;
   skipped with its reason otherwise.

``--device cpu --quick`` is the smoke test CI runs (seconds): the train-step part with tiny presets
at 16 px in fp32; the fractional part skipped (its two sweeps pay a sweep's start-up twice, a
minute on a small box: ``--device cpu`` without ``--quick`` runs it as 4 trials at 0.5 CPU against
1 trial on 2 CPUs); DDP skipped. Goals are checked only on CUDA.

    python benchmarks/gpu.py                         # CUDA (default when available)
    python benchmarks/gpu.py --device cpu --quick    # CPU smoke test

Prints one table and one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCHMARKS = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHMARKS))
import train_step  # noqa: E402  (the CPU comparison of raysweep's step with a bare loop, reused)

FRACTIONAL_SWEEP = BENCHMARKS.parent / "search_spaces" / "fractional_gpu.yaml"
GOAL_STEP_RATIO = 0.9
GOAL_FRACTIONAL_RATIO = 2.5
#: (arch, image size, batch) of the train-step part on CUDA: the paper presets' batch at 64 px
#: (search_spaces/paper_*.yaml), a quarter of it at 256 px (16x the pixels per image).
CUDA_STEP_CASES = [("autoencoder_kl", 64, 128), ("autoencoder_kl", 256, 32),
                   ("vector_vae", 64, 128), ("vector_vae", 256, 32)]
CPU_STEP_CASES = [("autoencoder_kl", 16, 8), ("vector_vae", 16, 8)]


# -------------------------------------------------------------------------- train step
def step_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """raysweep's step against the bare loop for every (arch, size, batch) case."""
    cuda = args.device == "cuda"
    rows = []
    for arch, size, batch in CUDA_STEP_CASES if cuda else CPU_STEP_CASES:
        case = argparse.Namespace(
            arch=arch, preset="paper" if cuda else "tiny", image_size=size, batch_size=batch, device=args.device,
            precision="bf16" if cuda else "fp32", steps=args.step_steps, blocks=args.step_blocks,
            warmup=args.step_warmup,
        )
        started = time.perf_counter()
        row = train_step.run(case, balancer=False)
        row["seconds"] = round(time.perf_counter() - started, 1)
        print(f"train step {arch} {size} px batch {batch}: raysweep {row['raysweep_images_per_s']} img/s, bare "
              f"{row['bare_images_per_s']} img/s, ratio {row['ratio']}", flush=True)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- sweeps
def fractional_trial(args: argparse.Namespace) -> dict[str, Any]:
    """The trial of the fractional-GPU sweep file, at ``--sweep-steps`` (tiny 16 px on CPU)."""
    from raysweep.config import read_yaml

    trial = read_yaml(FRACTIONAL_SWEEP)["trial"]
    trial["train"].update(max_steps=args.sweep_steps, val_every=max(1, args.sweep_steps // 2))
    trial["objective"]["kl_warmup_steps"] = min(trial["objective"].get("kl_warmup_steps", 0), args.sweep_steps)
    if args.device == "cpu":
        trial["data"].update(image_size=16, xysquares={"square_size": 4})
        trial["train"]["batch_size"] = 16
    return trial


def run_sweep_throughput(name: str, trial: dict[str, Any], resources: dict[str, Any], seeds: int,
                         storage: str) -> dict[str, Any]:
    """A raysweep sweep of `seeds` trials (a grid over the seed): wall time and images/s."""
    from raysweep.tune.load import sweep_from_dict
    from raysweep.tune.run import run_sweep

    raw: dict[str, Any] = {"name": name, "trial": trial, "resources": resources}
    if seeds > 1:
        raw["search"] = {"mode": "grid", "grid": {"train.seed": list(range(seeds))}}
    started = time.perf_counter()
    outcome = run_sweep(sweep_from_dict(raw, source=name), storage=storage, verbose=0)
    wall = time.perf_counter() - started
    statuses = [row["status"] for row in outcome.rows]
    if len(statuses) != seeds or any(s != "finished" for s in statuses):
        raise RuntimeError(f"sweep {name}: trials ended {statuses}")
    finals = [json.loads((Path(row["outputs"]) / "final.json").read_text()) for row in outcome.rows]
    images = sum(f["step"] for f in finals) * trial["train"]["batch_size"]
    return {"trials": seeds, "resources": resources, "wall_s": round(wall, 2),
            "images_per_s": round(images / wall, 1),
            "loop_images_per_s": round(sum(f["images_per_second"] for f in finals), 1)}


def fractional(args: argparse.Namespace, storage: str) -> dict[str, Any]:
    """4 trials at a quarter of the device against 1 trial on all of it (CPU: 0.5 CPU against 2)."""
    trial = fractional_trial(args)
    if args.device == "cuda":
        packed = {"workers": 1, "gpus_per_worker": 0.25, "cpus_per_worker": args.cpus_per_trial}
        whole = {"workers": 1, "gpus_per_worker": 1, "cpus_per_worker": args.cpus_per_trial}
    else:
        packed = {"workers": 1, "cpus_per_worker": 0.5}
        whole = {"workers": 1, "cpus_per_worker": 2}
    one = run_sweep_throughput("whole", trial, whole, 1, storage)
    four = run_sweep_throughput("packed", trial, packed, 4, storage)
    result = {"one_whole": one, "four_packed": four,
              "ratio": round(four["images_per_s"] / one["images_per_s"], 3),
              "loop_ratio": round(four["loop_images_per_s"] / one["loop_images_per_s"], 3)}
    print(f"fractional: 4 packed {four['images_per_s']} img/s against 1 whole {one['images_per_s']} img/s: "
          f"{result['ratio']}x", flush=True)
    return result


def ddp(args: argparse.Namespace, storage: str) -> dict[str, Any]:
    """A 2-GPU NCCL DDP trial of the paper vector VAE against the same trial on one GPU."""
    import torch

    if args.device != "cuda" or torch.cuda.device_count() < 2:
        found = torch.cuda.device_count() if torch.cuda.is_available() else 0
        reason = f"needs 2 CUDA GPUs, found {found}" + ("" if args.device == "cuda" else f" (--device {args.device})")
        print(f"ddp: skipped: {reason}", flush=True)
        return {"skipped": reason}
    trial = {"data": {"dataset": "xysquares", "image_size": 64, "xysquares": {"square_size": 8}},
             "model": {"arch": "vector_vae", "preset": "paper"}, "loss": {"neural": "none"},
             "objective": {"beta": 0.008},
             "train": {"batch_size": 128, "max_steps": args.ddp_steps, "val_every": args.ddp_steps,
                       "precision": "bf16"}}
    one = run_sweep_throughput("ddp_one_gpu", trial, {"workers": 1, "gpus_per_worker": 1,
                                                      "cpus_per_worker": args.cpus_per_trial}, 1, storage)
    two = run_sweep_throughput("ddp_two_gpus", trial, {"workers": 2, "gpus_per_worker": 1,
                                                       "cpus_per_worker": args.cpus_per_trial}, 1, storage)
    result = {"one_gpu": one, "two_gpus": two,
              "loop_scaling": round(two["loop_images_per_s"] / one["loop_images_per_s"], 3)}
    print(f"ddp: 2 GPUs {two['loop_images_per_s']} img/s against 1 GPU {one['loop_images_per_s']} img/s: "
          f"{result['loop_scaling']}x", flush=True)
    return result


# -------------------------------------------------------------------------------- main
def print_table(summary: dict[str, Any]) -> None:
    print(f"\n{'part':<34}{'raysweep':>12}{'anchor':>12}{'ratio':>8}{'goal':>8}")
    for row in summary["train_step"]:
        name = f"step {row['arch']} {row['image_size']}px b{row['batch_size']} {row['precision']}"
        print(f"{name:<34}{row['raysweep_images_per_s']:>12.1f}{row['bare_images_per_s']:>12.1f}{row['ratio']:>8.3f}"
              f"{'>=' + str(GOAL_STEP_RATIO):>8}")
    for part, ours, anchor, ratio, goal in (
        ("fractional", "four_packed", "one_whole", "ratio", f">={GOAL_FRACTIONAL_RATIO}"),
        ("ddp", "two_gpus", "one_gpu", "loop_scaling", "-"),
    ):
        block = summary[part]
        if "skipped" in block:
            print(f"{part:<34}{'skipped: ' + block['skipped']:>40}")
            continue
        key = "images_per_s" if part == "fractional" else "loop_images_per_s"
        print(f"{part + ' (img/s)':<34}{block[ours][key]:>12.1f}{block[anchor][key]:>12.1f}{block[ratio]:>8.3f}"
              f"{goal:>8}")
    print("goals: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in summary["goals"].items())
          if summary["goals"] else "goals: checked on CUDA only")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few steps (the CPU smoke test)")
    parser.add_argument("--parts", nargs="+", default=["train_step", "fractional", "ddp"],
                        choices=["train_step", "fractional", "ddp"])
    parser.add_argument("--step-steps", type=int, default=20, help="steps per timed block of the train-step part")
    parser.add_argument("--step-blocks", type=int, default=5, help="alternating timed blocks per side")
    parser.add_argument("--step-warmup", type=int, default=10)
    parser.add_argument("--sweep-steps", type=int, default=3000, help="steps per fractional-part trial")
    parser.add_argument("--ddp-steps", type=int, default=1000, help="steps of the DDP part's trials")
    parser.add_argument("--cpus-per-trial", type=float, default=2.0, help="CPUs of each GPU trial (worker)")
    args = parser.parse_args()
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible (use --device cpu for the smoke test)")
    if args.quick:
        args.step_steps, args.step_blocks, args.step_warmup = 2, 2, 1
        args.sweep_steps, args.ddp_steps = (8, 8) if args.device == "cpu" else (300, 100)
    if args.device == "cpu":
        torch.set_num_threads(1)

    started = time.perf_counter()
    summary: dict[str, Any] = {"device": args.device, "quick": args.quick,
                               "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                               "gpus": torch.cuda.device_count() if args.device == "cuda" else 0,
                               "train_step": [], "fractional": {"skipped": "not asked (--parts)"},
                               "ddp": {"skipped": "not asked (--parts)"}}
    if "train_step" in args.parts:
        summary["train_step"] = step_rows(args)
    # Ray starts only for a part that runs sweeps (not for the CPU smoke test, which skips both).
    skip_fractional = args.quick and args.device == "cpu"
    ddp_runs = args.device == "cuda" and torch.cuda.device_count() >= 2
    if ("fractional" in args.parts and not skip_fractional) or ("ddp" in args.parts and ddp_runs):
        import ray

        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
        extra = {"num_cpus": 2} if args.device == "cpu" else {}
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level="WARNING", **extra)
        with tempfile.TemporaryDirectory(prefix="raysweep-bench-gpu-") as storage:
            if "fractional" in args.parts and not skip_fractional:
                summary["fractional"] = fractional(args, storage)
            if "ddp" in args.parts and ddp_runs:
                summary["ddp"] = ddp(args, storage)
        ray.shutdown()
    if "fractional" in args.parts and skip_fractional:
        reason = "CPU --quick skips its two sweeps (run --device cpu without --quick for 0.5 CPU trials)"
        print(f"fractional: skipped: {reason}", flush=True)
        summary["fractional"] = {"skipped": reason}
    if "ddp" in args.parts and not ddp_runs:
        summary["ddp"] = ddp(args, "")  # the skip and its reason
    goals: dict[str, bool] = {}
    if args.device == "cuda":
        goals.update({f"step_{r['arch']}_{r['image_size']}": r["ratio"] >= GOAL_STEP_RATIO for r in summary["train_step"]})
        if "ratio" in summary["fractional"]:
            goals["fractional"] = summary["fractional"]["ratio"] >= GOAL_FRACTIONAL_RATIO
    summary["goals"] = goals
    summary["seconds"] = round(time.perf_counter() - started, 1)
    print_table(summary)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
