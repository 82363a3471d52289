"""Throughput of raysweep's training step against a bare hand-written PyTorch loop.

Both run in this process on the same model architecture, the same loss (pixel SSE + beta * KL,
Adam, cosine schedule) and the same batch. Blocks of steps alternate between the two so that
machine noise hits both alike; the median block throughput of each is reported, and the ratio
raysweep / bare (goal: >= 0.95).

    python benchmarks/train_step.py                       # CPU, tiny vector VAE, 32 px
    python benchmarks/train_step.py --quick               # 3 blocks of 5 steps at 16 px (smoke test)
    python benchmarks/train_step.py --balancer            # also with the EnCodec balancer on
    python benchmarks/train_step.py --device cuda --preset paper --image-size 64 --precision bf16
    python benchmarks/train_step.py --device cuda --preset paper --image-size 256 --precision bf16 --batch-size 32

Prints one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch

from raysweep.config import trial_config_from_dict
from raysweep.control.schedules import cosine_lr_factor
from raysweep.metrics import kl_per_sample
from raysweep.models import build_model
from raysweep.train.loop import Trainer


def make_trainer(args: argparse.Namespace, balancer: bool, out: str) -> Trainer:
    square = max(4, args.image_size // 8)
    cfg = trial_config_from_dict({
        "data": {"dataset": "xysquares", "image_size": args.image_size, "val_size": 64, "hflip": False,
                 "xysquares": {"square_size": square}},
        "model": {"arch": args.arch, "preset": args.preset},
        "loss": {"neural": "none", "balancer": balancer},
        "objective": {"beta": 1.0},
        "train": {"max_steps": 10**6, "batch_size": args.batch_size, "lr": 1e-4, "device": args.device,
                  "precision": args.precision},
    })
    return Trainer(cfg, __import__("pathlib").Path(out), report=None, progress=False)


class BareLoop:
    """The hand-written baseline: what a researcher would write without raysweep."""

    def __init__(self, args: argparse.Namespace, channels: int, device: torch.device, bf16: bool) -> None:
        torch.manual_seed(0)
        self.model = build_model(args.arch, args.preset, args.image_size, channels).to(device)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: cosine_lr_factor(s, 10**6))
        self.device, self.bf16 = device, bf16

    def step(self, x: torch.Tensor) -> None:
        x = x.to(self.device, non_blocking=True)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        sse = ((out.x_hat.float() - x) ** 2).flatten(1).sum(1).mean()
        loss = sse + 1.0 * kl_per_sample(out.mu, out.logvar).mean()
        loss.backward()
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)


def timed_block(step_fn, x: torch.Tensor, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step_fn(x)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * x.shape[0] / (time.perf_counter() - start)


def run(args: argparse.Namespace, balancer: bool) -> dict:
    with tempfile.TemporaryDirectory() as out:
        trainer = make_trainer(args, balancer, out)
        x = torch.stack([trainer.train_set[i][0] for i in range(args.batch_size)])
        bare = BareLoop(args, trainer.channels, trainer.device, trainer.use_bf16)
        trainer.model.train()
        ours_fn = trainer.train_step
        for _ in range(args.warmup):
            ours_fn(x)
            bare.step(x)
        ours, base = [], []
        for _ in range(args.blocks):
            ours.append(timed_block(ours_fn, x, args.steps, trainer.device))
            base.append(timed_block(bare.step, x, args.steps, trainer.device))
        result = {
            "arch": args.arch, "preset": args.preset, "image_size": args.image_size, "batch_size": args.batch_size,
            "device": str(trainer.device), "precision": "bf16" if trainer.use_bf16 else "fp32",
            "balancer": balancer, "threads": torch.get_num_threads(),
            "raysweep_images_per_s": round(statistics.median(ours), 1),
            "bare_images_per_s": round(statistics.median(base), 1),
        }
        result["ratio"] = round(result["raysweep_images_per_s"] / result["bare_images_per_s"], 3)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vector_vae", choices=["vector_vae", "autoencoder_kl"])
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=7, help="alternating timed blocks per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--balancer", action="store_true", help="also measure with the EnCodec balancer on")
    parser.add_argument("--quick", action="store_true", help="16 px, batch 16, 3 blocks of 5 steps (smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.batch_size, args.steps, args.blocks, args.warmup = 16, 16, 5, 3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(json.dumps(run(args, balancer=False)), flush=True)
    if args.balancer:
        print(json.dumps(run(args, balancer=True)), flush=True)


if __name__ == "__main__":
    main()
