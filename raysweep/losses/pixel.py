"""Pixel squared error, the ``D_sse`` of the objective (SPEC section 2)."""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from raysweep.losses.base import ReconstructionTerm, check_pair
from raysweep.registry import PIXEL_TERMS

__all__ = ["SSE"]


@PIXEL_TERMS.builds("sse")
class SSE(ReconstructionTerm):
    """``D_sse(x, x_hat) = sum over channels and pixels of (x_hat - x)^2``, per image.

    Units: squared intensity on the ``[-1, 1]`` scale, summed over ``C * H * W`` values (not a
    mean), so one image's value is ``C * H * W * mse``. Computed in float32 so that bf16
    autocast does not round the sum.
    """

    name: ClassVar[str] = "sse"

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """Sum of squared errors per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        return (x_hat.float() - x.float()).square().flatten(1).sum(dim=1)
