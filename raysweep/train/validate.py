"""Validation: the metrics of SPEC section 3 on the held-out set, reduced over DDP ranks.

Each rank evaluates a contiguous shard of the validation set; sums and sufficient statistics are
all-reduced, so every rank ends with the global values. The reparameterisation noise of the whole
validation set is drawn once from a fixed seed and sliced per image, so the metrics do not depend
on the number of workers or on the batch size.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader, Subset

from raysweep.metrics import PosteriorStats
from raysweep.train import distributed as D

if TYPE_CHECKING:
    from raysweep.train.loop import Trainer

VAL_NOISE_SALT = 987_654_321
MAX_COVARIANCE_LATENTS = 4096


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak range 2, so MAX^2 = 4) from per-pixel MSE."""
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else float("inf")


def _shard(num_items: int, rank: int, world: int) -> range:
    per = math.ceil(num_items / world)
    return range(rank * per, min(num_items, (rank + 1) * per))


@torch.no_grad()
def validate(trainer: Trainer, val_set: torch.utils.data.Dataset) -> dict[str, float]:
    """Compute validation metrics for `trainer`'s model on `val_set` (global over ranks).

    Returns ``rate`` (nats per image), ``rate_bits``, ``distortion_sse`` (per image),
    ``mse`` (per pixel), ``psnr`` (dB), ``distortion_<term>`` for every reconstruction term (per
    image, the term's own units), ``anisotropy``, ``aggregated_anisotropy``,
    ``aggregated_condition``, ``channel_anisotropy`` (spatial latents), ``active_units`` and
    ``mig`` when the dataset has factors, with their sample sizes. A metric that would be unsound
    on this set is left out and named, with the reason, in ``metrics["withheld"]`` (a dict of
    strings). The sorted variance profile is stored on ``trainer.variance_profile``.
    """
    model, objective = trainer.model, trainer.objective
    model.eval()
    num_val = len(val_set)  # type: ignore[arg-type]
    if getattr(trainer, "_val_noise", None) is None:
        generator = torch.Generator().manual_seed(trainer.cfg.train.seed + VAL_NOISE_SALT)
        trainer._val_noise = torch.randn((num_val, *model.latent_shape), generator=generator)
    noise_all: torch.Tensor = trainer._val_noise
    shard = _shard(num_val, trainer.rank, trainer.world)
    loader = DataLoader(Subset(val_set, list(shard)), batch_size=max(trainer.per_rank, 32), shuffle=False,
                        num_workers=trainer.cfg.data.num_workers)
    has_factors = len(getattr(val_set, "factor_sizes", ())) > 0
    # The J x J covariance of mu costs 8 J^2 bytes: skip the aggregated anisotropy for very large
    # spatial latents rather than exhaust memory.
    num_latents = model.num_latents
    stats = PosteriorStats(
        factor_sizes=getattr(val_set, "factor_sizes", None) if has_factors else None,
        keep_mu=has_factors and num_latents >= 2,
        covariance=num_latents <= MAX_COVARIANCE_LATENTS,
    )
    terms = {objective.pixel.name: objective.pixel}
    if objective.neural is not None:
        terms[objective.neural.name] = objective.neural
    sums = torch.zeros(2 + len(terms), dtype=torch.float64)  # count, sse, terms...
    offset = shard.start
    for images, factors in loader:
        x = images.to(trainer.device)
        eps = noise_all[offset : offset + len(x)].to(trainer.device)
        offset += len(x)
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.use_bf16):
            out = model(x, noise=eps)
        x_hat = out.x_hat.float()
        x_logvar = None if out.x_logvar is None else out.x_logvar.float()
        stats.update(out.mu.float(), out.logvar.float(), factors if stats.keep_mu else None)
        sums[0] += len(x)
        sums[1] += ((x_hat - x) ** 2).flatten(1).sum(1).double().sum().cpu()
        for i, term in enumerate(terms.values()):
            sums[2 + i] += term(x, x_hat, x_logvar).double().sum().cpu()
    sums = D.all_reduce_sum(sums)
    stats.all_reduce_()
    count = float(sums[0])
    metrics = {k: float(v) for k, v in stats.compute().items()}
    sse = float(sums[1]) / count
    pixels = trainer.channels * trainer.cfg.data.image_size**2
    metrics["distortion_sse"] = sse
    metrics["mse"] = sse / pixels
    metrics["psnr"] = psnr_from_mse(metrics["mse"])
    for i, name in enumerate(terms):
        metrics[f"distortion_{name}"] = float(sums[2 + i]) / count
    trainer.variance_profile = stats.compute_profile().cpu()
    withheld = stats.withheld()
    if withheld:
        metrics["withheld"] = withheld  # type: ignore[assignment]
    return metrics


@torch.no_grad()
def latent_statistics(trainer: Trainer, sample: torch.utils.data.Dataset) -> tuple[dict[str, float], dict[str, str]]:
    """Aggregated-posterior statistics and MIG from the posterior means of `sample` (global over ranks).

    Returns ``(metrics, withheld)``: ``aggregated_anisotropy`` and ``aggregated_condition`` (when
    the sample is large enough for a sound estimate, else named in ``withheld`` with the reason),
    ``channel_anisotropy`` / ``channel_condition`` for spatial latents, ``aggregated_samples``,
    and ``mig`` with ``mig_samples`` when the sample has ground-truth factors. Only ``mu`` is
    used, so no reparameterisation noise is drawn.
    """
    model = trainer.model
    model.eval()
    shard = _shard(len(sample), trainer.rank, trainer.world)  # type: ignore[arg-type]
    loader = DataLoader(Subset(sample, list(shard)), batch_size=256, shuffle=False,
                        num_workers=trainer.cfg.data.num_workers)
    factor_sizes = getattr(sample, "factor_sizes", ())
    has_factors = len(factor_sizes) > 0 and model.num_latents >= 2
    stats = PosteriorStats(factor_sizes=factor_sizes if has_factors else None, keep_mu=has_factors,
                           covariance=model.num_latents <= MAX_COVARIANCE_LATENTS)
    for images, factors in loader:
        with torch.autocast(trainer.device.type, dtype=torch.bfloat16, enabled=trainer.use_bf16):
            mu, logvar = model.encode(images.to(trainer.device))
        stats.update(mu.float(), logvar.float(), factors if has_factors else None)
    stats.all_reduce_()
    keys = ("aggregated_anisotropy", "aggregated_condition", "aggregated_samples", "channel_anisotropy",
            "channel_condition", "mig", "mig_samples")
    return {k: float(v) for k, v in stats.compute().items() if k in keys}, stats.withheld()
