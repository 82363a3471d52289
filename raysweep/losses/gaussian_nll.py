"""Gaussian likelihood with learned observation sharpness (seed 004, L-VAE).

Two variants of ``-log p(x | z)`` for a Gaussian decoder ``N(x_hat, sigma^2)``:

- :class:`ScalarSigmaNLL` (LS-VAE): one learned scalar sigma,
  ``||x - x_hat||^2 / (2 sigma^2) + D log sigma`` with ``D = C * H * W``.
- :class:`PixelSigmaNLL` (LV-VAE): a sigma per pixel output by the decoder as
  ``x_logvar = log sigma_i^2``, ``sum_i (x_i - x_hat_i)^2 / (2 sigma_i^2) + log sigma_i``.

Both are per image, in nats, *without* the constant ``0.5 * D * log(2 pi)`` unless
``include_constant=True`` (the constant changes nothing in training).

How sigma trains under the balancer: the balancer rescales only the gradient with respect to
``x_hat``. The loop must also add ``w * term(x, x_hat.detach(), x_logvar).mean()`` to the
non-balanced part of the loss, so that ``log_sigma`` (returned by ``trainable_parameters()``, which
the generator optimiser must include: a known bug elsewhere leaves it untrained) or the decoder's
``x_logvar`` head receives the exact likelihood gradient. Note that for the *scalar* variant the
balancer normalises the ``x_hat`` gradient, so sigma then only scales a gradient that the balancer
rescales anyway: sigma is learned and logged, but does not change the direction of the update.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor, nn

from raysweep.errors import RaysweepError
from raysweep.losses.base import ReconstructionTerm, check_pair
from raysweep.registry import PIXEL_TERMS

if TYPE_CHECKING:
    from raysweep.config import LossConfig

__all__ = ["ScalarSigmaNLL", "PixelSigmaNLL"]

_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)


@PIXEL_TERMS.builds("learned_sigma_scalar")
class ScalarSigmaNLL(ReconstructionTerm):
    """Gaussian negative log-likelihood with one learned scalar sigma (LS-VAE), per image, nats.

    ``-log p(x|z) = ||x - x_hat||^2 / (2 sigma^2) + D log sigma  [+ 0.5 D log(2 pi)]``,
    ``D = C * H * W``. sigma is parameterised as ``log_sigma`` (an ``nn.Parameter``) so it stays
    positive; at the optimum ``sigma^2`` equals the per-pixel mean squared error.

    Args:
        init_sigma: initial sigma (intensity units on the ``[-1, 1]`` scale), > 0.
        include_constant: add ``0.5 * D * log(2 pi)`` so the value is the exact NLL.
    """

    name: ClassVar[str] = "gaussian_nll"

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> ScalarSigmaNLL:
        """sigma starts at ``loss.sigma_init``."""
        return cls(init_sigma=loss.sigma_init)

    def __init__(self, init_sigma: float = 1.0, include_constant: bool = False) -> None:
        super().__init__()
        if not init_sigma > 0:
            raise RaysweepError(f"loss.sigma_init must be > 0, got {init_sigma}; use e.g. 1.0")
        self.log_sigma = nn.Parameter(torch.tensor(math.log(init_sigma), dtype=torch.float32))
        self.include_constant = include_constant

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """NLL per image in nats, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        squared_error = (x.float() - x_hat.float()).square().flatten(1).sum(dim=1)
        dimension = x[0].numel()
        nll = squared_error * torch.exp(-2.0 * self.log_sigma) / 2.0 + dimension * self.log_sigma
        if self.include_constant:
            nll = nll + dimension * _HALF_LOG_TWO_PI
        return nll

    def trainable_parameters(self) -> list[nn.Parameter]:
        """``[log_sigma]``: must be in the generator optimiser."""
        return [self.log_sigma]

    def sigma(self) -> float:
        """Current sigma, for logging."""
        return float(self.log_sigma.detach().exp())


@PIXEL_TERMS.builds("learned_sigma_pixel")
class PixelSigmaNLL(ReconstructionTerm):
    """Gaussian negative log-likelihood with a per-pixel sigma from the decoder (LV-VAE).

    ``-log p(x|z) = sum_i (x_i - x_hat_i)^2 / (2 sigma_i^2) + log sigma_i  [+ 0.5 log(2 pi)]``
    summed over all ``C * H * W`` values, with ``log sigma_i^2 = x_logvar_i``. Per image, nats.
    ``x_logvar`` must broadcast to ``x`` (e.g. ``(B, C, H, W)`` or ``(B, 1, H, W)``). No clamp is
    applied: bounding ``x_logvar`` is the decoder's job.

    Args:
        include_constant: add ``0.5 * log(2 pi)`` per value so the result is the exact NLL.
    """

    name: ClassVar[str] = "gaussian_nll"
    needs_logvar: ClassVar[bool] = True

    def __init__(self, include_constant: bool = False) -> None:
        super().__init__()
        self.include_constant = include_constant
        self._last_sigma: Tensor | None = None

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """NLL per image in nats, shape ``(B,)``; raises RaysweepError when ``x_logvar`` is None."""
        check_pair(x, x_hat)
        if x_logvar is None:
            raise RaysweepError(
                "loss.pixel=learned_sigma_pixel needs a model built with pixel_logvar (the decoder "
                "returned no x_logvar); build the model with pixel_logvar=True or choose another loss.pixel"
            )
        logvar = x_logvar.float().expand_as(x)
        squared_error = (x.float() - x_hat.float()).square()
        per_value = 0.5 * squared_error * torch.exp(-logvar) + 0.5 * logvar
        if self.include_constant:
            per_value = per_value + _HALF_LOG_TWO_PI
        # Kept as a tensor: calling .item() here would force a GPU sync every step.
        self._last_sigma = torch.exp(0.5 * logvar.detach()).mean()
        return per_value.flatten(1).sum(dim=1)

    def sigma(self) -> float:
        """Mean per-pixel sigma of the last batch seen (nan before the first call), for logging."""
        return float("nan") if self._last_sigma is None else float(self._last_sigma)
