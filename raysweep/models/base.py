"""The interface every VAE in raysweep implements: a diagonal Gaussian encoder and a decoder mean.

Both architectures (``VectorVAE`` with a vector latent, ``AutoencoderKLVAE`` with a spatial latent)
subclass :class:`VAE` and implement two raw hooks, ``_encode_moments`` and ``_decode_output``. The
base class owns everything the science depends on, so it is written once:

* the clamp of the posterior log-variance (``logvar``),
* the reparameterised sample ``z = mu + exp(0.5 * logvar) * eps`` with caller-controlled noise,
* the split of the decoder output into the mean ``x_hat`` and, optionally, a per-pixel
  log-variance ``x_logvar`` (LV-VAE, seed 004), and its clamp.

Images are in [-1, 1]. The decoder's last layer is linear (no tanh or sigmoid): the pixel sum of
squared errors is then exactly, up to constants, the negative Gaussian log-likelihood
``-log N(x; x_hat, sigma^2 I)`` of the model, which is what the rate-distortion reading of the
objective assumes. A squashing output would make SSE a likelihood of a different, non-Gaussian
observation model and would saturate gradients at the edges of the pixel range.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import nn

# Posterior log-variance range (log sigma^2 of one latent coordinate); the same bounds as diffusers'
# DiagonalGaussianDistribution. Below -30 (sigma^2 = 9e-14) the KL's -logvar term grows without
# bound as the encoder shrinks a coordinate to a delta (KL blow-up, NaN from log(0) in the limit).
# Above 20 (sigma^2 = 4.9e8, far wider than the N(0, I) prior) a runaway encoder soon overflows
# exp() (float32 at 88, float16 at 11) and the KL and the sample become inf. torch.clamp passes no
# gradient outside the range, as in diffusers.
LOGVAR_MIN: float = -30.0
LOGVAR_MAX: float = 20.0

# Per-pixel observation log-variance range (LV-VAE). Images in [-1, 1] are quantised to 8 bits, a
# step of 2/255 ~ 7.8e-3; exp(0.5 * -10) = 6.7e-3 is a standard deviation just below that, so the
# likelihood cannot collapse onto a single pixel value (the NLL would diverge to -inf). At +10
# sigma = 148, far wider than the data range: the clamp never binds on a sensible model.
X_LOGVAR_MIN: float = -10.0
X_LOGVAR_MAX: float = 10.0


class VAEOutput(NamedTuple):
    """Everything one forward pass of a :class:`VAE` produces.

    Attributes:
        x_hat: decoder mean, shape (B, C, H, W), images in [-1, 1] scale (linear output, not
            squashed; values may leave the range slightly).
        mu: posterior mean, shape (B, *latent_shape).
        logvar: posterior log-variance log sigma^2, shape (B, *latent_shape), clamped to
            [logvar_min, logvar_max].
        z: the latent fed to the decoder, shape (B, *latent_shape): ``mu + sigma * eps`` when
            sampling, ``mu`` otherwise.
        x_logvar: per-pixel observation log-variance, shape (B, C, H, W), clamped to
            [X_LOGVAR_MIN, X_LOGVAR_MAX]; ``None`` unless the model was built with
            ``pixel_logvar=True``.
    """

    x_hat: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor
    z: torch.Tensor
    x_logvar: torch.Tensor | None


class VAE(nn.Module, ABC):
    """Abstract VAE with a diagonal Gaussian posterior ``q(z|x) = N(mu(x), diag(exp(logvar(x))))``.

    Subclasses build their networks in ``__init__`` (after calling this constructor) and implement
    ``_encode_moments`` and ``_decode_output``; the latent shape is fixed at construction.

    Args:
        in_channels: number of image channels C.
        image_size: side of the square input images H = W, in pixels.
        latent_shape: shape of one latent, without the batch dimension, e.g. ``(64,)`` for a
            vector latent or ``(4, 8, 8)`` for a spatial one.
        pixel_logvar: when True the decoder also emits a per-pixel log-variance (LV-VAE).
        logvar_min: lower clamp of the posterior log-variance (default -30).
        logvar_max: upper clamp of the posterior log-variance (default 20).
    """

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        latent_shape: tuple[int, ...],
        pixel_logvar: bool = False,
        logvar_min: float = LOGVAR_MIN,
        logvar_max: float = LOGVAR_MAX,
    ) -> None:
        super().__init__()
        if not logvar_min < logvar_max:
            raise ValueError(f"logvar_min ({logvar_min}) must be below logvar_max ({logvar_max})")
        self._in_channels = int(in_channels)
        self._image_size = int(image_size)
        self._latent_shape = tuple(int(s) for s in latent_shape)
        self.pixel_logvar = bool(pixel_logvar)
        self.logvar_min = float(logvar_min)
        self.logvar_max = float(logvar_max)

    # ---- shape properties -------------------------------------------------------------------
    @property
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one latent without the batch dimension."""
        return self._latent_shape

    @property
    def num_latents(self) -> int:
        """Number of latent coordinates per image (product of ``latent_shape``); KL sums over these."""
        return math.prod(self._latent_shape)

    @property
    def in_channels(self) -> int:
        """Number of image channels C."""
        return self._in_channels

    @property
    def image_size(self) -> int:
        """Side H = W of the images the model was built for, in pixels."""
        return self._image_size

    @property
    def decoder_out_channels(self) -> int:
        """Channels of the raw decoder output: C, or 2C with a per-pixel log-variance."""
        return 2 * self._in_channels if self.pixel_logvar else self._in_channels

    # ---- hooks for subclasses ----------------------------------------------------------------
    @abstractmethod
    def _encode_moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unclamped) posterior mean and log-variance, each (B, *latent_shape)."""

    @abstractmethod
    def _decode_output(self, z: torch.Tensor) -> torch.Tensor:
        """Raw decoder output of shape (B, decoder_out_channels, H, W)."""

    # ---- public API -----------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters of a batch of images.

        Args:
            x: images, shape (B, C, H, W), values in [-1, 1].

        Returns:
            ``(mu, logvar)``, each (B, *latent_shape), in float32; ``logvar`` is clamped to
            [logvar_min, logvar_max].
        """
        mu, logvar = self._encode_moments(x)
        # float32 even under bf16 autocast: the KL sums thousands of coordinates and exp(logvar)
        # near the clamp edges loses all precision in bf16 (8 mantissa bits).
        mu = mu.float()
        logvar = torch.clamp(logvar.float(), self.logvar_min, self.logvar_max)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Decoder mean (and per-pixel log-variance) for a batch of latents.

        Args:
            z: latents, shape (B, *latent_shape).

        Returns:
            ``(x_hat, x_logvar)``: ``x_hat`` (B, C, H, W) in [-1, 1] scale, float32; ``x_logvar``
            (B, C, H, W) clamped to [X_LOGVAR_MIN, X_LOGVAR_MAX], or ``None`` without
            ``pixel_logvar``.
        """
        # Match the decoder's parameter dtype so a model cast to bf16 (no autocast) still runs;
        # under autocast the parameters stay float32 and autocast picks the compute dtype.
        param = next(self.parameters())
        out = self._decode_output(z.to(param.dtype)).float()
        if not self.pixel_logvar:
            return out, None
        x_hat, x_logvar = out.split(self._in_channels, dim=1)
        return x_hat, torch.clamp(x_logvar, X_LOGVAR_MIN, X_LOGVAR_MAX)

    def sample_latent(
        self,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Reparameterised sample ``z = mu + exp(0.5 * logvar) * eps``, ``eps ~ N(0, I)``.

        ``eps`` is drawn with ``torch.randn(mu.shape, generator=generator, ...)`` so a caller that
        passes a seeded generator gets exactly reproducible noise. The generator must live on the
        same device as ``mu`` (a CUDA generator for CUDA tensors).
        """
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(
        self,
        x: torch.Tensor,
        generator: torch.Generator | None = None,
        sample: bool = True,
        noise: torch.Tensor | None = None,
    ) -> VAEOutput:
        """Encode, sample (or take the mean), decode.

        Args:
            x: images, shape (B, C, H, W), values in [-1, 1].
            generator: source of the sampling noise; ``None`` uses torch's global generator.
            sample: when False, ``z = mu`` (deterministic, for evaluation of the mean decoder).
            noise: explicit ``eps`` of shape (B, *latent_shape) (overrides `generator`). The
                training loop draws the noise of the whole global batch from a step-seeded
                generator and hands each DDP rank its slice, so W workers sample exactly what one
                worker would.

        Returns:
            A :class:`VAEOutput`.
        """
        mu, logvar = self.encode(x)
        if not sample:
            z = mu
        elif noise is not None:
            z = mu + torch.exp(0.5 * logvar) * noise.to(device=mu.device, dtype=mu.dtype)
        else:
            z = self.sample_latent(mu, logvar, generator)
        x_hat, x_logvar = self.decode(z)
        return VAEOutput(x_hat=x_hat, mu=mu, logvar=logvar, z=z, x_logvar=x_logvar)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable, by default) scalar parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
