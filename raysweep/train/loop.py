"""One trial, end to end: build data, model and objective from a :class:`TrialConfig`, train,
validate, checkpoint, report.

The loop knows nothing about Ray or MLflow. It takes a ``report(metrics, checkpoint_dir)`` callable,
so the same code runs under ``raysweep train`` (no Ray), inside a Tune trial and inside each DDP
worker of a TorchTrainer. It is DDP-aware: when a torch.distributed process group is initialised it
wraps the model (and the discriminator) in DistributedDataParallel, gives each rank its share of
every global batch, and reduces validation statistics so every rank reports global values.

Randomness is derived from ``(train.seed, step)`` (batch order, flips, the reparameterisation noise of
the whole global batch), so a run with W workers follows the same trajectory as a run with one, and a
run resumed from a checkpoint reproduces the uninterrupted run without saving any RNG state.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from raysweep.config import TrialConfig, dump_yaml
from raysweep.control.schedules import cosine_lr_factor
from raysweep.data import build_datasets, build_latent_sample
from raysweep.data.cache import batch_images, training_loader
from raysweep.errors import RaysweepError
from raysweep.models import VAE, build_model
from raysweep.names import FINAL_KEYS, FINAL_SUMMARY, METRICS_LOG, TRIAL_CONFIG, WITHHELD
from raysweep.registry import PIXEL_TERMS
from raysweep.train import distributed as D
from raysweep.train.artifacts import (
    write_reconstruction_grid,
    write_step_reconstructions,
    write_variance_profile,
)
from raysweep.train.checkpoint import META_FILE, load_checkpoint, save_checkpoint
from raysweep.train.evaluate import LATENT_SAMPLE_KEYS, evaluate, latent_statistics, validation_noise
from raysweep.train.objective import Objective
from raysweep.train.sampler import StepBatchSampler

ReportFn = Callable[[dict[str, float], Path | None], None]

def total_steps(cfg: TrialConfig, num_train: int) -> int:
    """Optimiser steps of the run: ``train.max_steps``, ``train.epochs`` worth of steps, or the
    smaller of the two when both are set."""
    steps_per_epoch = num_train // cfg.train.batch_size
    if steps_per_epoch == 0:
        raise RaysweepError(
            f"train.batch_size {cfg.train.batch_size} is larger than the training set ({num_train} images): "
            "lower train.batch_size or raise data.train_size"
        )
    candidates = []
    if cfg.train.max_steps is not None:
        candidates.append(cfg.train.max_steps)
    if cfg.train.epochs is not None:
        candidates.append(max(1, math.ceil(cfg.train.epochs * steps_per_epoch)))
    return min(candidates)


def build_trial_model(cfg: TrialConfig, in_channels: int) -> VAE:
    """The (randomly initialised) VAE a trial of `cfg` trains on images of `in_channels` channels:
    the one constructor of the loop and of a trained model loaded back (``raysweep.load_run``)."""
    return build_model(
        arch=cfg.model.arch,
        preset=cfg.model.preset,
        image_size=cfg.data.image_size,
        in_channels=in_channels,
        latent_dim=cfg.model.latent_dim,
        # the registered pixel term says whether it reads a per-pixel log-variance from the decoder
        pixel_logvar=PIXEL_TERMS.code(cfg.loss.pixel).needs_logvar,
        logvar_min=cfg.model.logvar_min,
        logvar_max=cfg.model.logvar_max,
    )


def _step_generator(seed: int, step: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 7 + salt)


class Trainer:
    """State of one training run (see the module docstring). Use :func:`train` to run it."""

    def __init__(self, cfg: TrialConfig, out_dir: Path, report: ReportFn | None, progress: bool | None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        self.report_fn = report
        self.rank, self.world = D.rank(), D.world_size()
        if cfg.train.batch_size % self.world:
            raise RaysweepError(
                f"train.batch_size {cfg.train.batch_size} is not divisible by the {self.world} workers: "
                "make it a multiple of resources.workers"
            )
        self.per_rank = cfg.train.batch_size // self.world
        self.device = D.select_device(cfg.train.device)
        self.use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and self.device.type == "cuda")
        self.show_progress = self.rank == 0 and (sys.stderr.isatty() if progress is None else progress)

        # One rank builds a missing prepared cache (with a bar only on rank 0); the others wait on its lock.
        self.train_set, self.val_set = build_datasets(cfg.data, progress=self.show_progress)
        self.latent_sample = build_latent_sample(cfg.data)
        self.channels = self.train_set.channels
        self.total_steps = total_steps(cfg, len(self.train_set))

        torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
        self.model = build_trial_model(cfg, self.channels).to(self.device)
        self.objective = Objective(cfg, self.channels, self.device).to(self.device)
        self.optimizer = torch.optim.Adam(
            list(self.model.parameters()) + self.objective.trainable_parameters(), lr=cfg.train.lr, weight_decay=0.0
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: cosine_lr_factor(s, self.total_steps, cfg.train.lr_min_ratio)
        )
        self.disc = self.objective.discriminator
        self.disc_optimizer: torch.optim.Optimizer | None = None
        if self.disc is not None:
            self.disc_optimizer = torch.optim.Adam(
                self.disc.parameters(), lr=cfg.train.lr * cfg.loss.patchgan.lr_ratio, betas=(0.5, 0.9)
            )
        self.val_noise = validation_noise(len(self.val_set), self.model.latent_shape, cfg.train.seed)
        self.variance_profile: torch.Tensor | None = None  # of the latest validation
        self.ddp_model: nn.Module = self._wrap(self.model)
        self.ddp_disc: nn.Module | None = self._wrap(self.disc) if self.disc is not None else None
        self.step = 0
        self.status = "running"
        self.last_metrics: dict[str, Any] = {}
        self._running: dict[str, float] = {}
        self._running_count = 0
        self._rate_ema: float | None = None

    def _wrap(self, module: nn.Module) -> nn.Module:
        if not D.is_distributed():
            return module
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    # --------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "objective": self.objective.state_for_checkpoint(),
        }
        if self.disc_optimizer is not None:
            state["disc_optimizer"] = self.disc_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_from_checkpoint(state["objective"])
        if self.disc_optimizer is not None:
            self.disc_optimizer.load_state_dict(state["disc_optimizer"])
        self.step = int(state["step"])

    def resume(self, checkpoint: Path) -> None:
        """Continue from `checkpoint` (a directory written by :func:`save_checkpoint`)."""
        self.load_state_dict(load_checkpoint(checkpoint, map_location=self.device))
        meta_file = Path(checkpoint) / META_FILE
        if meta_file.is_file():
            # The validation taken with this checkpoint: a run resumed at its last step has nothing
            # left to do and must not validate (and log) that step a second time.
            self.last_metrics = dict(json.loads(meta_file.read_text()).get("metrics", {}))
        if self.rank == 0:
            self._truncate_metrics_log()

    def _truncate_metrics_log(self) -> None:
        # Validations logged after the checkpoint we resume from will be redone: drop them so
        # metrics.jsonl holds each step once.
        log = self.out_dir / METRICS_LOG
        if not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short by the crash we are resuming from
        log.write_text("".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------------------ training
    def _loader(self) -> DataLoader:
        sampler = StepBatchSampler(
            num_items=len(self.train_set), batch_size=self.cfg.train.batch_size, rank=self.rank, world_size=self.world,
            seed=self.cfg.train.seed, start_step=self.step, total_steps=self.total_steps,
        )
        return training_loader(
            self.train_set, sampler, num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda"
        )

    def _rank_slice(self, tensor: torch.Tensor) -> torch.Tensor:
        start = self.rank * self.per_rank
        return tensor[start : start + self.per_rank]

    def _augment(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.data.hflip:
            return x
        flips = torch.rand(self.cfg.train.batch_size, generator=_step_generator(self.cfg.train.seed, self.step, 1)) < 0.5
        flips = self._rank_slice(flips).to(x.device)
        return torch.where(flips.view(-1, 1, 1, 1), x.flip(-1), x)

    def _noise(self) -> torch.Tensor:
        shape = (self.cfg.train.batch_size, *self.model.latent_shape)
        eps = torch.randn(shape, generator=_step_generator(self.cfg.train.seed, self.step, 2))
        return self._rank_slice(eps).to(self.device)

    def train_step(self, x: torch.Tensor) -> bool:
        """One generator (and discriminator) update. Returns False when the run diverged."""
        x = self._augment(x.to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.ddp_model(x, noise=self._noise())
        result = self.objective.backward(x, out, self.step)
        if not result.finite():
            self.optimizer.zero_grad(set_to_none=True)
            return False
        if self.cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        values = {"train_loss": result.loss, "train_rate": result.rate}
        values.update({f"train_distortion_{k}": v for k, v in result.terms.items()})
        values.update({f"balancer/{k}": v for k, v in result.extra.items() if k != "rate_ema"})
        values.update(result.logged)
        if self.ddp_disc is not None and self.disc_optimizer is not None and self.objective.adversarial_active(self.step):
            values["train_disc_loss"] = self._discriminator_step(x, out.x_hat.detach().float())
        for key, value in values.items():
            self._running[key] = self._running.get(key, 0.0) + value
        self._running_count += 1
        if "rate_ema" in result.extra:
            self._rate_ema = result.extra["rate_ema"]
        return True

    def _discriminator_step(self, x: torch.Tensor, x_hat: torch.Tensor) -> float:
        assert self.ddp_disc is not None and self.disc_optimizer is not None
        neural = self.objective.neural
        # One forward on real and fake together: DDP allows one forward per backward.
        logits, _ = self.ddp_disc(torch.cat([x, x_hat]))
        real, fake = logits.chunk(2)
        loss = neural.discriminator_loss(real, fake)  # type: ignore[union-attr]
        self.disc_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.disc_optimizer.step()
        return float(D.all_reduce_mean(loss.detach().reshape(1))[0])

    def _train_summary(self) -> dict[str, float]:
        """Means of the training values since the last validation (and GECO's current rate EMA)."""
        count = max(1, self._running_count)
        summary = {k: v / count for k, v in self._running.items()}
        if self._rate_ema is not None:
            summary["rate_ema"] = self._rate_ema
        self._running, self._running_count = {}, 0
        return summary

    # ---------------------------------------------------------------------------- validation
    def validate_and_report(self, final: bool = False) -> dict[str, Any]:
        """Validation metrics (global over ranks), a checkpoint on rank 0, then `report`.

        The final validation of a generated dataset also encodes the larger latent sample
        (``data.latent_sample_size``) for the aggregated-posterior statistics and MIG, replacing
        their validation-set estimates."""
        run = {"device": self.device, "use_bf16": self.use_bf16, "num_workers": self.cfg.data.num_workers}
        evaluation = evaluate(self.model, self.objective.evaluation_terms(), self.val_set, self.val_noise,
                              batch_size=max(self.per_rank, 32), **run)
        self.variance_profile = evaluation.profile
        metrics: dict[str, Any] = dict(evaluation.metrics)
        withheld = evaluation.withheld
        if final and self.latent_sample is not None:
            latent = latent_statistics(self.model, self.latent_sample, **run)
            for key in LATENT_SAMPLE_KEYS:
                metrics.pop(key, None)
            metrics.update(latent.metrics)
            withheld = latent.withheld
        if withheld:
            metrics[WITHHELD] = withheld  # reasons, by metric: absent above, null in final.json
        metrics.update(self._train_summary())
        metrics["step"] = self.step
        metrics["epoch"] = self.step / max(1, len(self.train_set) // self.cfg.train.batch_size)
        metrics["beta"] = self.objective.beta(self.step)
        metrics["lr"] = self.scheduler.get_last_lr()[0]
        sigma = getattr(self.objective.pixel, "sigma", None)
        if callable(sigma):
            metrics["sigma"] = float(sigma())
        self.last_metrics = metrics
        checkpoint = None
        if self.rank == 0:
            if self.cfg.train.log_images:  # before the log line: the tracker reads it with the result
                write_step_reconstructions(self.out_dir, self.step, self.model, self.val_set, self.device)
            # Log first, checkpoint second: a crash between the two leaves a log line past the
            # newest checkpoint, which a resume truncates and rewrites; the other order would
            # lose this validation's line for good.
            with open(self.out_dir / METRICS_LOG, "a") as log:
                log.write(json.dumps(metrics) + "\n")
            checkpoint = save_checkpoint(
                self.out_dir / "checkpoints", self.step, self.state_dict(), {"step": self.step, "metrics": metrics},
                keep=self.cfg.train.keep_checkpoints,
            )
        if self.report_fn is not None:
            self.report_fn(dict(metrics), checkpoint)
        return metrics

    def fit(self) -> dict[str, Any]:
        """Train until the last step (or divergence) and return the final summary."""
        if self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            dump_yaml(self.cfg, self.out_dir / TRIAL_CONFIG)
            if self.step == 0:
                # A fresh start owns the log: never append to a previous run's validations.
                (self.out_dir / METRICS_LOG).unlink(missing_ok=True)
        started = time.perf_counter()
        start_step = self.step
        bar = None
        if self.show_progress:
            from tqdm import tqdm

            bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        self.model.train()
        for batch in self._loader():
            x = batch_images(batch)  # float32 in [-1, 1], whether decoded or read from a prepared cache
            if not self.train_step(x):
                self.status = "diverged"
                break
            self.step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{self._running.get('train_loss', 0.0) / max(1, self._running_count):.4g}")
            if self.step % self.cfg.train.val_every == 0 or self.step == self.total_steps:
                self.validate_and_report(final=self.step == self.total_steps)
                self.model.train()
        if bar is not None:
            bar.close()
        if self.status == "running":
            self.status = "finished"
            if not self.last_metrics or self.last_metrics.get("step") != self.step:
                self.validate_and_report(final=True)
        elapsed = time.perf_counter() - started
        return self._finish(elapsed, self.step - start_step)

    def _finish(self, elapsed: float, steps_run: int) -> dict[str, Any]:
        final: dict[str, Any] = {k: v for k, v in self.last_metrics.items()}
        final.update(
            status=self.status, step=self.step, total_steps=self.total_steps, world_size=self.world,
            seconds=elapsed, images_per_second=steps_run * self.cfg.train.batch_size / max(elapsed, 1e-9),
            # 0 for a run trained in one go; else the checkpoint step this (last) process continued from.
            resumed_from_step=self.step - steps_run,
        )
        if self.status == "diverged":
            final["diverged_at_step"] = self.step
        withheld = final.get(WITHHELD, {})
        for key in FINAL_KEYS:
            if key in withheld:
                final[key] = None  # withheld as unsound: null in final.json, never a misleading number
            final.setdefault(key, float("nan"))
        if self.rank == 0:
            if self.variance_profile is not None:
                write_variance_profile(self.out_dir, self.variance_profile)
            write_reconstruction_grid(self.out_dir, self.model, self.val_set, self.device)
            (self.out_dir / FINAL_SUMMARY).write_text(json.dumps(final, indent=2, sort_keys=True))
        # Ranks leave together: a rank that tears its process group down while rank 0 is still
        # writing can abort gloo's transport ("terminate called without an active exception").
        D.barrier()
        return final


def train(
    cfg: TrialConfig,
    out_dir: str | Path,
    report: ReportFn | None = None,
    resume_from: str | Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one VAE as `cfg` says and return its final summary (also written to OUT/final.json).

    Args:
        cfg: the validated trial configuration.
        out_dir: where rank 0 writes ``metrics.jsonl``, ``final.json``, ``config.yaml``,
            ``checkpoints/`` and artifacts.
        report: called at every validation on every rank with the metrics and, on rank 0, the
            checkpoint directory just written (None on other ranks).
        resume_from: a checkpoint directory to continue from.
        progress: show a progress bar (default: when stderr is a terminal).
    """
    trainer = Trainer(cfg, Path(out_dir), report, progress)
    if resume_from is not None:
        trainer.resume(Path(resume_from))
    return trainer.fit()
