"""Box-blur reconstruction distance (seed 003, Michlo et al.).

``D_box(x, x_hat) = || K * x_hat - K * x ||^2`` with ``K`` a normalised ``(2r+1) x (2r+1)`` box
kernel applied to each channel separately, zero padded. Blurring is then a linear, 1-Lipschitz
feature map (see :class:`BoxBlurDistance` for why the padding matters), so
``D_box <= D_sse``: a weaker distortion than pixel SSE in the sense of the paper's theorem 3, a
"neural-like" loss with no learned weights. On XYSquares it makes nearby square positions close,
which pixel SSE (every pair of images equally far apart) cannot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch.nn.functional as F
from torch import Tensor

from raysweep.errors import RaysweepError
from raysweep.losses.base import ReconstructionTerm, check_pair
from raysweep.registry import NEURAL_TERMS

if TYPE_CHECKING:
    import torch

    from raysweep.config import LossConfig

__all__ = ["BoxBlurDistance"]


@NEURAL_TERMS.builds("box_blur")
class BoxBlurDistance(ReconstructionTerm):
    """Squared distance between box-blurred images, per image.

    Args:
        radius: kernel radius ``r`` in pixels; the kernel is ``(2r+1)^2`` with all weights
            ``1 / (2r+1)^2``. ``radius=0`` is the identity, so the term equals :class:`SSE`.

    Padding: *zero* padding by ``r`` pixels, with the kernel still normalised by ``(2r+1)^2``
    (``count_include_pad``), so the output keeps the input size. The blur is then a linear map
    whose matrix has non-negative entries and row and column sums at most 1, so its operator
    norm is at most 1 (Schur test): ``D_box <= D_sse`` for every pair, the Lipschitz constant
    the weaker-distortion argument needs. Replicate padding would keep constant images constant
    but weights border pixels more than once, giving a constant above 1 (1.01 to 1.05 measured
    for r = 2, 3), so it is not used. Near the border a constant image is dimmed by the padding;
    that only changes which differences the distance emphasises, never the bound.

    Units: squared intensity on the ``[-1, 1]`` scale, summed over ``C * H * W`` blurred values.
    """

    name: ClassVar[str] = "box_blur"

    @classmethod
    def from_config(
        cls, loss: LossConfig, *, channels: int = 3, device: torch.device | str | None = None
    ) -> BoxBlurDistance:
        """The blur of ``loss.box_blur.radius``."""
        return cls(radius=loss.box_blur.radius)

    def __init__(self, radius: int = 1) -> None:
        super().__init__()
        if radius < 0:
            raise RaysweepError(f"loss.box_blur.radius must be >= 0, got {radius}; use 0, 1, 2, ...")
        self.radius = int(radius)

    def blur(self, images: Tensor) -> Tensor:
        """Apply the normalised box kernel to every channel (zero padding, same size)."""
        if self.radius == 0:
            return images
        r = self.radius
        # avg_pool2d with count_include_pad is exactly a depthwise convolution with the
        # (2r+1)^2 kernel of weights 1/(2r+1)^2 over the zero-padded image.
        return F.avg_pool2d(images, kernel_size=2 * r + 1, stride=1, padding=r, count_include_pad=True)

    @staticmethod
    def lipschitz_constant() -> float:
        """Upper bound on ``||K * d|| / ||d||`` for any difference image ``d``: 1 (zero padding)."""
        return 1.0

    def forward(self, x: Tensor, x_hat: Tensor, x_logvar: Tensor | None = None) -> Tensor:
        """``|| K * x_hat - K * x ||^2`` per image, shape ``(B,)``; ``x_logvar`` is ignored."""
        check_pair(x, x_hat)
        # Padding and blurring are linear, so blurring the difference once equals K*x_hat - K*x.
        difference = self.blur(x_hat.float() - x.float())
        return difference.square().flatten(1).sum(dim=1)

    def extra_repr(self) -> str:
        """Show the radius when the module is printed."""
        return f"radius={self.radius}"
