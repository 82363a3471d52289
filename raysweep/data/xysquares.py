"""XYSquares: coloured squares on a grid, a dataset adversarial to pixel-wise losses.

Seed 003 (Michlo et al., "Overlooked implications of the reconstruction loss for VAE
disentanglement"), modelled on disent's ``dataset/data/_groundtruth__xysquares.py``.

Why it exists: with the default ``grid_spacing == square_size`` two positions of a square never
overlap, so moving one square by one grid step or across the whole image changes the image by
exactly the same amount under pixel squared error. The pixel loss therefore carries no notion of
"nearby" for the VAE to order its latents by, and disentanglement collapses. Lowering
``grid_spacing`` below ``square_size`` makes neighbouring positions overlap and restores an
ordering; so does a loss that sees past single pixels (the box-blur distortion of
``raysweep.losses.box_blur``).

Factors: each square contributes two independent factors, its grid column ``x`` and grid row
``y``, each taking ``grid_size`` values. Square i is drawn in colour channel i (``rgb=True``,
names ``x_R, y_R, x_G, y_G, x_B, y_B``) or all squares share one grey channel (``rgb=False``,
names ``x_0, y_0, x_1, y_1, ...``; where squares overlap the pixel just stays at +1). The
defaults give 64x64 RGB images with three 8-pixel squares on an 8x8 grid: 8^6 = 262,144 images.

Images are generated on the fly from the index (mixed-radix: the first factor is the most
significant digit, as ``numpy.unravel_index``), background -1 and squares +1, so the dataset is
deterministic by construction and needs nothing downloaded. Horizontal-flip augmentation is not
done here: the training loop flips whole batches with a step-seeded generator so that a resumed
run is bit-identical.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import torch
from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS

_RGB_SUFFIXES = ("R", "G", "B")


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an int >= minimum, else raise a one-line RaysweepError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RaysweepError(f"XYSquares {name}={value!r} is invalid: give a whole number >= {minimum}")
    return value


class XYSquares(Dataset):
    """Images of ``num_squares`` squares whose grid positions are the ground-truth factors.

    Args (all keyword-only, sizes in pixels):
        image_size: side of the square image (64).
        square_size: side of each square (8).
        grid_size: positions per axis for every square (8); ``None`` takes the largest grid that
            fits, :meth:`max_grid_size`.
        grid_spacing: pixels between neighbouring grid positions; ``None`` means
            ``square_size``. With ``grid_spacing >= square_size`` images that differ in the
            position of one square are all equally far apart under pixel MSE (the adversarial
            case); with ``grid_spacing < square_size`` neighbouring positions overlap.
        num_squares: 1, 2 or 3 squares.
        rgb: square i in channel i of an RGB image (True), or every square in one grey
            channel (False).

    The grid must fit: ``(grid_size - 1) * grid_spacing + square_size <= image_size``. A grid
    smaller than the image is centred (offset :attr:`grid_offset` pixels from the top-left),
    as in disent.

    Items are ``(image, factors)``: a float32 tensor (C, image_size, image_size) in {-1, +1}
    and a LongTensor of the ``2 * num_squares`` factor indices
    ``(x_0, y_0, x_1, y_1, ...)``; ``x`` indexes columns, ``y`` rows.
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        square_size: int = 8,
        grid_size: int | None = 8,
        grid_spacing: int | None = None,
        num_squares: int = 3,
        rgb: bool = True,
    ) -> None:
        """Validate the geometry; nothing is generated until an item is read."""
        _check_int("image_size", image_size, 1)
        _check_int("square_size", square_size, 1)
        spacing = square_size if grid_spacing is None else _check_int("grid_spacing", grid_spacing, 1)
        if isinstance(num_squares, bool) or num_squares not in (1, 2, 3):
            raise RaysweepError(f"XYSquares num_squares={num_squares!r} is invalid: give 1, 2 or 3")
        largest = self.max_grid_size(image_size=image_size, square_size=square_size, grid_spacing=spacing)
        if largest < 1:
            raise RaysweepError(
                f"XYSquares square_size={square_size} is larger than image_size={image_size}: "
                f"give square_size <= {image_size}"
            )
        if grid_size is None:
            grid_size = largest
        _check_int("grid_size", grid_size, 1)
        if grid_size > largest:
            extent = (grid_size - 1) * spacing + square_size
            raise RaysweepError(
                f"XYSquares grid_size={grid_size} with grid_spacing={spacing} and square_size={square_size} "
                f"spans {extent} pixels, more than image_size={image_size}: use grid_size <= {largest} "
                "(or null for the largest that fits), a smaller grid_spacing, or a larger image_size"
            )

        self.image_size: int = image_size
        self.square_size: int = square_size
        self.grid_size: int = grid_size
        self.grid_spacing: int = spacing
        self.num_squares: int = num_squares
        self.rgb: bool = bool(rgb)
        self.channels: int = 3 if self.rgb else 1
        # Centre the grid so any slack is split between both borders (disent does the same).
        self.grid_offset: int = (image_size - ((grid_size - 1) * spacing + square_size)) // 2
        suffixes = _RGB_SUFFIXES[:num_squares] if self.rgb else tuple(str(i) for i in range(num_squares))
        self.factor_names: tuple[str, ...] = tuple(f"{axis}_{s}" for s in suffixes for axis in ("x", "y"))
        self.factor_sizes: tuple[int, ...] = (grid_size,) * (2 * num_squares)
        # Mixed-radix place values, first factor most significant.
        strides = [1] * len(self.factor_sizes)
        for i in range(len(self.factor_sizes) - 2, -1, -1):
            strides[i] = strides[i + 1] * self.factor_sizes[i + 1]
        self._strides = torch.tensor(strides, dtype=torch.long)
        self._len = strides[0] * self.factor_sizes[0]

    @staticmethod
    def max_grid_size(*, image_size: int = 64, square_size: int = 8, grid_spacing: int | None = None) -> int:
        """Largest ``grid_size`` with ``(grid_size - 1) * grid_spacing + square_size <= image_size``.

        Sizes in pixels; ``grid_spacing=None`` means ``square_size``. Returns 0 when the square
        does not fit in the image at all.
        """
        spacing = square_size if grid_spacing is None else grid_spacing
        if square_size > image_size:
            return 0
        return (image_size - square_size) // spacing + 1

    @property
    def num_factors(self) -> int:
        """Number of ground-truth factors (two per square)."""
        return len(self.factor_sizes)

    def __len__(self) -> int:
        """``grid_size ** (2 * num_squares)``: every combination of square positions once."""
        return self._len

    def __repr__(self) -> str:
        return (
            f"XYSquares(image_size={self.image_size}, square_size={self.square_size}, grid_size={self.grid_size}, "
            f"grid_spacing={self.grid_spacing}, num_squares={self.num_squares}, rgb={self.rgb})"
        )

    def index_to_factors(self, index: int | torch.Tensor) -> torch.Tensor:
        """Factor indices of the image at ``index``.

        Args:
            index: an int, or a LongTensor of indices of any shape.

        Returns:
            LongTensor of shape (num_factors,) for an int, else ``index.shape + (num_factors,)``.
        """
        indices = torch.as_tensor(index, dtype=torch.long)
        if bool(((indices < 0) | (indices >= self._len)).any()):
            raise IndexError(f"XYSquares index out of range [0, {self._len}): {index}")
        sizes = torch.tensor(self.factor_sizes, dtype=torch.long)
        return torch.div(indices.unsqueeze(-1), self._strides, rounding_mode="floor") % sizes

    def factors_to_index(self, factors: Sequence[int] | torch.Tensor) -> int | torch.Tensor:
        """Index of the image with the given factors (inverse of :meth:`index_to_factors`).

        Args:
            factors: one factor vector (a sequence or a tensor of shape (num_factors,)), or a
                LongTensor of shape (..., num_factors).

        Returns:
            An int for one vector given as a sequence or 1-d tensor, else a LongTensor of
            shape ``factors.shape[:-1]``.
        """
        values = torch.as_tensor(factors, dtype=torch.long)
        self._check_factors(values)
        index = (values * self._strides).sum(dim=-1)
        return int(index) if values.dim() == 1 else index

    def render(self, factors: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Draw the image for one factor vector: float32 (C, image_size, image_size) in {-1, +1}."""
        values = torch.as_tensor(factors, dtype=torch.long)
        if values.dim() != 1:
            raise ValueError(f"render takes one factor vector of shape ({self.num_factors},), got {tuple(values.shape)}")
        self._check_factors(values)
        image = torch.full((self.channels, self.image_size, self.image_size), -1.0, dtype=torch.float32)
        size, positions = self.square_size, values.tolist()
        for square in range(self.num_squares):
            left = self.grid_offset + self.grid_spacing * positions[2 * square]
            top = self.grid_offset + self.grid_spacing * positions[2 * square + 1]
            channel = square if self.rgb else 0
            image[channel, top : top + size, left : left + size] = 1.0
        return image

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, factors)`` for ``index`` in ``[0, len)`` (negative indices count from the end)."""
        position = operator.index(index)
        if position < 0:
            position += self._len
        if not 0 <= position < self._len:
            raise IndexError(f"XYSquares index {index} out of range for {self._len} images")
        factors = self.index_to_factors(position)
        return self.render(factors), factors

    def _check_factors(self, values: torch.Tensor) -> None:
        if values.dim() == 0 or values.shape[-1] != self.num_factors:
            raise ValueError(f"expected factor vectors of length {self.num_factors}, got shape {tuple(values.shape)}")
        if bool(((values < 0) | (values >= self.grid_size)).any()):
            raise ValueError(f"factor values must lie in [0, {self.grid_size}), got {values.tolist()}")


@DATASETS.builds("xysquares")
def build_xysquares(cfg: DataConfig) -> XYSquares:
    """The whole generated dataset of a ``data`` block (one pool; the split is drawn by the caller).

    Only the geometry is computed here, no image: ``raysweep validate`` calls it to check the split.
    """
    sq = cfg.xysquares
    return XYSquares(
        image_size=cfg.image_size, square_size=sq.square_size, grid_size=sq.grid_size,
        grid_spacing=sq.grid_spacing, num_squares=sq.num_squares, rgb=sq.rgb,
    )
