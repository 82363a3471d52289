"""Evaluation: the metrics of SPEC section 3 for a model on a dataset, reduced over DDP ranks.

Pure functions of a model, its reconstruction terms and the data (no Trainer): each rank evaluates
a contiguous shard of the dataset; sums and sufficient statistics are all-reduced, so every rank
ends with the global values. The reparameterisation noise of the whole validation set is drawn
once from a fixed seed (:func:`validation_noise`) and sliced per image, so the metrics do not
depend on the number of workers or on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from raysweep.losses.base import ReconstructionTerm
from raysweep.metrics import PosteriorStats
from raysweep.names import (
    AGGREGATED_ANISOTROPY,
    AGGREGATED_CONDITION,
    AGGREGATED_SAMPLES,
    CHANNEL_ANISOTROPY,
    CHANNEL_CONDITION,
    DISTORTION_SSE,
    MIG,
    MIG_SAMPLES,
    MSE,
    PSNR,
)
from raysweep.train import distributed as D

VAL_NOISE_SALT = 987_654_321
# The J x J covariance of mu costs 8 J^2 bytes: above this many latent coordinates it is not kept.
MAX_COVARIANCE_LATENTS = 4096
# Metrics that the latent sample (data.latent_sample_size) estimates in place of the validation set.
LATENT_SAMPLE_KEYS = (AGGREGATED_ANISOTROPY, AGGREGATED_CONDITION, AGGREGATED_SAMPLES, CHANNEL_ANISOTROPY,
                      CHANNEL_CONDITION, MIG, MIG_SAMPLES)


@dataclass
class Evaluation:
    """What one evaluation measured.

    ``metrics``: plain floats (units in :mod:`raysweep.names`). ``withheld``: metrics left out
    because they would be unsound on this data, with the reason. ``profile``: the sorted variance
    profile (J,) on CPU, or None when not computed.
    """

    metrics: dict[str, float]
    withheld: dict[str, str] = field(default_factory=dict)
    profile: torch.Tensor | None = None


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [-1, 1] (peak-to-peak range 2, so MAX^2 = 4) from per-pixel MSE."""
    return 10.0 * math.log10(4.0 / mse) if mse > 0 else float("inf")


def validation_noise(num_images: int, latent_shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The reparameterisation noise of a whole validation set, (N, *latent_shape), fixed per seed."""
    generator = torch.Generator().manual_seed(seed + VAL_NOISE_SALT)
    return torch.randn((num_images, *latent_shape), generator=generator)


def _shard(num_items: int, rank: int, world: int) -> range:
    per = math.ceil(num_items / world)
    return range(rank * per, min(num_items, (rank + 1) * per))


def _factor_sizes(dataset: Dataset) -> tuple[int, ...]:
    return tuple(getattr(dataset, "factor_sizes", ()))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    terms: Mapping[str, ReconstructionTerm],
    dataset: Dataset,
    noise: torch.Tensor,
    *,
    device: torch.device,
    batch_size: int = 32,
    use_bf16: bool = False,
    num_workers: int = 0,
) -> Evaluation:
    """Validation metrics of `model` on `dataset` (global over DDP ranks when a group is initialised).

    Args:
        model: a :class:`raysweep.models.base.VAE` (its ``num_latents`` sizes the statistics).
        terms: the reconstruction terms by name; each is reported as ``distortion_<name>``.
        dataset: items ``(image, factors)``, images (C, H, W) in [-1, 1].
        noise: :func:`validation_noise` for the whole dataset (sliced per image).
        device, batch_size, use_bf16, num_workers: how to run it.

    Metrics: ``rate`` (nats per image), ``rate_bits``, ``distortion_sse`` (per image), ``mse`` (per
    pixel), ``psnr`` (dB), ``distortion_<term>`` (per image, the term's own units), ``anisotropy``,
    ``aggregated_anisotropy`` and ``aggregated_condition`` (when well estimated),
    ``channel_anisotropy`` (spatial latents), ``aggregated_samples``, ``active_units``, and ``mig``
    with ``mig_samples`` when the dataset has factors.
    """
    model.eval()
    rank, world = D.rank(), D.world_size()
    shard = _shard(len(dataset), rank, world)  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, list(shard)), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    factor_sizes = _factor_sizes(dataset)
    keep_mu = len(factor_sizes) > 0 and model.num_latents >= 2
    stats = PosteriorStats(factor_sizes=factor_sizes if keep_mu else None, keep_mu=keep_mu,
                           covariance=model.num_latents <= MAX_COVARIANCE_LATENTS)
    sums = torch.zeros(2 + len(terms), dtype=torch.float64)  # count, sse, terms...
    offset = shard.start
    for images, factors in loader:
        x = images.to(device)
        eps = noise[offset : offset + len(x)].to(device)
        offset += len(x)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            out = model(x, noise=eps)
        x_hat = out.x_hat.float()
        x_logvar = None if out.x_logvar is None else out.x_logvar.float()
        stats.update(out.mu.float(), out.logvar.float(), factors if keep_mu else None)
        sums[0] += len(x)
        sums[1] += ((x_hat - x) ** 2).flatten(1).sum(1).double().sum().cpu()
        for i, term in enumerate(terms.values()):
            sums[2 + i] += term(x, x_hat, x_logvar).double().sum().cpu()
    sums = D.all_reduce_sum(sums)
    stats.all_reduce_()
    count = float(sums[0])
    metrics = {k: float(v) for k, v in stats.compute().items()}
    sse = float(sums[1]) / count
    channels, height, width = dataset[0][0].shape  # type: ignore[index]
    metrics[DISTORTION_SSE] = sse
    metrics[MSE] = sse / (channels * height * width)
    metrics[PSNR] = psnr_from_mse(metrics[MSE])
    for i, name in enumerate(terms):
        metrics[f"distortion_{name}"] = float(sums[2 + i]) / count
    return Evaluation(metrics, stats.withheld(), stats.compute_profile().cpu())


@torch.no_grad()
def latent_statistics(
    model: nn.Module,
    dataset: Dataset,
    *,
    device: torch.device,
    batch_size: int = 256,
    use_bf16: bool = False,
    num_workers: int = 0,
) -> Evaluation:
    """Aggregated-posterior statistics and MIG from the posterior means of `dataset` (global over ranks).

    Metrics: those of :data:`LATENT_SAMPLE_KEYS` that apply: ``aggregated_anisotropy`` and
    ``aggregated_condition`` when the sample is large enough for a sound estimate (else named in
    ``withheld``), ``channel_anisotropy`` / ``channel_condition`` for spatial latents,
    ``aggregated_samples``, and ``mig`` with ``mig_samples`` when the items carry ground-truth
    factors. Only ``mu`` is used, so no reparameterisation noise is drawn; no profile.
    """
    model.eval()
    shard = _shard(len(dataset), D.rank(), D.world_size())  # type: ignore[arg-type]
    loader = DataLoader(Subset(dataset, list(shard)), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    factor_sizes = _factor_sizes(dataset)
    has_factors = len(factor_sizes) > 0 and model.num_latents >= 2
    stats = PosteriorStats(factor_sizes=factor_sizes if has_factors else None, keep_mu=has_factors,
                           covariance=model.num_latents <= MAX_COVARIANCE_LATENTS)
    for images, factors in loader:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
            mu, logvar = model.encode(images.to(device))
        stats.update(mu.float(), logvar.float(), factors if has_factors else None)
    stats.all_reduce_()
    metrics = {k: float(v) for k, v in stats.compute().items() if k in LATENT_SAMPLE_KEYS}
    return Evaluation(metrics, stats.withheld())
