"""Box-blur reconstruction distance (seed 003, Michlo et al.).

``D_box(x, x_hat) = || K * x_hat - K * x ||^2`` with ``K`` a normalised ``(2r+1) x (2r+1)`` box
kernel applied to each channel separately. Blurring is a linear, 1-Lipschitz feature map, so
``D_box <= D_sse``: a weaker distortion than pixel SSE in the sense of the paper's theorem 3, a
"neural-like" loss with no learned weights. On XYSquares it makes nearby square positions close,
which pixel SSE (every pair of images equally far apart) cannot.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from raysweep.errors import RaysweepError
from raysweep.losses.base import ReconstructionTerm, check_pair

__all__ = ["BoxBlurDistance"]


class BoxBlurDistance(ReconstructionTerm):
    """Squared distance between box-blurred images, per image.

    Args:
        radius: kernel radius ``r`` in pixels; the kernel is ``(2r+1)^2`` with all weights
            ``1 / (2r+1)^2``. ``radius=0`` is the identity, so the term equals :class:`SSE`.

    Padding: the image is padded by ``r`` pixels with *replicate* padding before a stride-1 box
    filter, so the output keeps the input size, a constant image stays exactly constant (no dark
    border as with zero padding), and any image size works (reflect padding needs ``H, W > r``).

    Units: squared intensity on the ``[-1, 1]`` scale, summed over ``C * H * W`` blurred values.
    """

    name: ClassVar[str] = "box_blur"

    def __init__(self, radius: int = 1) -> None:
        super().__init__()
        if radius < 0:
            raise RaysweepError(f"loss.box_blur.radius must be >= 0, got {radius}; use 0, 1, 2, ...")
        self.radius = int(radius)

    def blur(self, images: Tensor) -> Tensor:
        """Apply the normalised box kernel to every channel (replicate padding, same size)."""
        if self.radius == 0:
            return images
        r = self.radius
        padded = F.pad(images, (r, r, r, r), mode="replicate")
        # avg_pool2d is exactly a depthwise conv with the normalised box kernel, per channel.
        return F.avg_pool2d(padded, kernel_size=2 * r + 1, stride=1)

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """``|| K * x_hat - K * x ||^2`` per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        # Padding and blurring are linear, so blurring the difference once equals K*x_hat - K*x.
        difference = self.blur(x_hat.float() - x.float())
        return difference.square().flatten(1).sum(dim=1)

    def extra_repr(self) -> str:
        """Show the radius when the module is printed."""
        return f"radius={self.radius}"
