"""A convolutional VAE with a vector latent, in the style of pythae's CelebA networks.

This is the paper's "traditional VAE" (pythae ``VAE`` class with ``Encoder_Conv_VAE_CELEBA``,
25.2M parameters at 64x64 with a 64-dimensional latent). The layout follows pythae:

    encoder: n x [Conv2d(4x4, stride 2, pad 1) -> norm -> ReLU]  -> flatten
             -> Linear -> mu (latent_dim),  Linear -> logvar (latent_dim)
    decoder: Linear(latent_dim -> c_last * b * b) -> reshape (c_last, b, b)
             -> (n - 1) x [ConvTranspose2d(4x4, stride 2, pad 1) -> norm -> ReLU]
             -> ConvTranspose2d(4x4, stride 2, pad 1) to C (or 2C) channels, linear output

The decoder mirrors the encoder with 4x4 transposed convolutions from a 4x4 bottleneck. pythae's
own ``Decoder_Conv_AE_CELEBA`` (5x5 transposed convolutions from 8x8) would bring the total to
about 34.6M; the mirrored decoder gives 25.2M, the count the paper reports.

Each stride-2 stage halves (encoder) or doubles (decoder) the side exactly, so the bottleneck
side is ``b = image_size / 2^n``. The number of stages ``n`` is chosen from the image size so that
``b`` is between 4 and 7 (4 for every power of two): the deep, wide part of the network and the
linear heads keep the same size at every resolution, and larger images only add cheap, narrow
stages at the input end. Channels are set from the bottleneck outwards: the last stage has
``max_channels`` and each earlier stage half as many, never fewer than ``min_channels``.

Normalisation is GroupNorm, not pythae's BatchNorm: batch statistics make the result depend on how
a batch is split across DDP ranks (each rank normalises with its own sub-batch), which breaks the
equivalence of a 1-worker and a 2-worker run on the same global batch, and make evaluation depend
on running-statistic updates. GroupNorm normalises each image on its own.

The decoder's last layer is linear (no sigmoid, unlike pythae): images are in [-1, 1] and the
pixel SSE is then the Gaussian log-likelihood of the decoder mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from raysweep.models.base import LOGVAR_MAX, LOGVAR_MIN, VAE


@dataclass(frozen=True)
class VectorVAEPreset:
    """Size of a :class:`VectorVAE`.

    Attributes:
        max_channels: channels of the deepest stage (at the b x b bottleneck).
        min_channels: floor on the channels of the shallow stages of large images.
        latent_dim: default length of the latent vector.
    """

    max_channels: int
    min_channels: int
    latent_dim: int


VECTOR_VAE_PRESETS: dict[str, VectorVAEPreset] = {
    # Encoder stages (16, 32, 64) at 32x32 (3 stages, bottleneck 64 x 4 x 4); (16, 16, 32, 64) at
    # 64x64. ~0.11M parameters at 32x32: trains on two CPU cores at thousands of images/s.
    "tiny": VectorVAEPreset(max_channels=64, min_channels=16, latent_dim=10),
    # Encoder stages (128, 256, 512, 1024) at 64x64 (bottleneck 1024 x 4 x 4), pythae's
    # Encoder_Conv_VAE_CELEBA (GroupNorm in place of BatchNorm: same parameter count), with the
    # mirrored 4x4 transposed-conv decoder: 25,203,075 parameters at latent_dim 64 (paper: 25.2M). (256, 512, 1024) at 32x32; (64, ..., 1024) at 128x128.
    "paper": VectorVAEPreset(max_channels=1024, min_channels=32, latent_dim=64),
}


def vector_vae_stages(image_size: int) -> tuple[int, int] | None:
    """Number of stride-2 stages n and bottleneck side b for an image side, or None if unsupported.

    ``image_size`` must be ``b * 2^n`` with ``b`` in 4..7 and ``n >= 1`` (e.g. 8, 16, 32, 48, 64,
    96, 128, 256): n is the largest number of halvings that keeps the side an integer >= 4.
    """
    if image_size < 8:
        return None
    side, stages = image_size, 0
    while side % 2 == 0 and side // 2 >= 4:
        side //= 2
        stages += 1
    if stages == 0 or side > 7:
        return None
    return stages, side


def _group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with at least 4 channels per group and at most 32 groups (as in diffusers)."""
    groups = max(1, min(32, channels // 4))
    while channels % groups:
        groups -= 1
    return nn.GroupNorm(groups, channels)


class VectorVAE(VAE):
    """Convolutional VAE with a vector latent of ``latent_dim`` coordinates (see module docstring).

    Args:
        in_channels: image channels C.
        image_size: image side H = W in pixels; ``b * 2^n`` with b in 4..7, n >= 1.
        latent_dim: length of the latent vector.
        max_channels: channels at the bottleneck (deepest encoder stage).
        min_channels: floor on the channels of shallow stages.
        pixel_logvar: also decode a per-pixel log-variance (decoder emits 2C channels).
        logvar_min: lower clamp of the posterior log-variance.
        logvar_max: upper clamp of the posterior log-variance.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        latent_dim: int,
        max_channels: int,
        min_channels: int,
        pixel_logvar: bool = False,
        logvar_min: float = LOGVAR_MIN,
        logvar_max: float = LOGVAR_MAX,
    ) -> None:
        super().__init__(
            in_channels=in_channels,
            image_size=image_size,
            latent_shape=(latent_dim,),
            pixel_logvar=pixel_logvar,
            logvar_min=logvar_min,
            logvar_max=logvar_max,
        )
        layout = vector_vae_stages(image_size)
        if layout is None:
            raise ValueError(f"image_size {image_size} is not b * 2^n with b in 4..7 and n >= 1")
        stages, side = layout
        # Channels from the bottleneck outwards: c_last = max_channels, halving towards the input.
        channels = [max(min_channels, max_channels >> (stages - 1 - i)) for i in range(stages)]
        self.stage_channels: tuple[int, ...] = tuple(channels)
        self.bottleneck_side = side
        flat = channels[-1] * side * side

        encoder: list[nn.Module] = []
        previous = in_channels
        for width in channels:
            encoder += [nn.Conv2d(previous, width, 4, 2, 1), _group_norm(width), nn.ReLU()]
            previous = width
        self.encoder = nn.Sequential(*encoder, nn.Flatten())
        self.mu_head = nn.Linear(flat, latent_dim)
        self.logvar_head = nn.Linear(flat, latent_dim)

        self.decoder_input = nn.Linear(latent_dim, flat)
        decoder: list[nn.Module] = []
        widths = channels[::-1]  # bottleneck first
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            decoder += [nn.ConvTranspose2d(width_in, width_out, 4, 2, 1), _group_norm(width_out)]
            decoder.append(nn.ReLU())
        # Linear output layer: see the module docstring.
        decoder.append(nn.ConvTranspose2d(channels[0], self.decoder_out_channels, 4, 2, 1))
        self.decoder = nn.Sequential(*decoder)

    def _encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw mu and logvar, each (B, latent_dim)."""
        features = self.encoder(x)
        return self.mu_head(features), self.logvar_head(features)

    def _decode_output(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output (B, decoder_out_channels, H, W)."""
        side = self.bottleneck_side
        hidden = self.decoder_input(z).view(z.shape[0], self.stage_channels[-1], side, side)
        return self.decoder(hidden)
