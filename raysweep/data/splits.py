"""Deterministic train/validation splits, and a subset that keeps a dataset's description.

Every raysweep dataset exposes ``channels``, ``image_size``, ``factor_names`` and
``factor_sizes`` (see :class:`ImageDataset`). ``torch.utils.data.Subset`` drops them, so the
training code could no longer size the model from the split it trains on; :class:`Subset`
keeps them.

Splits are drawn with Python's ``random.Random(seed)``, whose shuffle is stable across Python,
NumPy and PyTorch versions: the same seed names the same held-out images on every machine and
in every resumed run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch.utils.data import Dataset

from raysweep.errors import RaysweepError


@runtime_checkable
class ImageDataset(Protocol):
    """What every raysweep dataset provides.

    Items are ``(image, factors)``: ``image`` a float32 tensor of shape
    (``channels``, ``image_size``, ``image_size``) with values in [-1, 1]; ``factors`` a
    LongTensor of shape (``len(factor_names)``,) holding ground-truth factor indices, of shape
    (0,) for datasets without factors.
    """

    channels: int
    image_size: int  # pixels per side (images are square)
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def _resolve_size(name: str, size: int | float, n: int) -> int:
    """Turn a count or a fraction of ``n`` into a count, with a one-line error when invalid."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise RaysweepError(f"{name}={size!r} is not a number: give a count (int) or a fraction in [0, 1)")
    if isinstance(size, float):
        if not 0.0 <= size < 1.0:
            raise RaysweepError(
                f"{name}={size} is not a fraction in [0, 1): give a fraction of the dataset or a whole count"
            )
        count = round(size * n)
        # A requested non-zero fraction of a small dataset must still hold out something.
        return max(count, 1) if size > 0.0 and n > 1 else count
    if size < 0:
        raise RaysweepError(f"{name}={size} is negative: give a count >= 0")
    return size


def partition_indices(n: int, sizes: Sequence[int], seed: int) -> list[list[int]]:
    """Split ``range(n)`` into disjoint random parts of the given sizes, deterministic per seed.

    Args:
        n: number of items to split.
        sizes: number of items in each part; their sum must not exceed ``n`` (items left over
            belong to no part).
        seed: the split's seed; the same (n, sizes, seed) always gives the same parts.

    Returns:
        One sorted list of indices per part (sorted so that reading a split walks the files in
        order; the data loader shuffles anyway).
    """
    if any(size < 0 for size in sizes):
        raise RaysweepError(f"split sizes {list(sizes)} contain a negative count: give counts >= 0")
    if sum(sizes) > n:
        raise RaysweepError(
            f"split sizes {list(sizes)} add up to {sum(sizes)}, more than the {n} items in the dataset: "
            "lower the split sizes"
        )
    order = list(range(n))
    random.Random(seed).shuffle(order)
    parts: list[list[int]] = []
    start = 0
    for size in sizes:
        parts.append(sorted(order[start : start + size]))
        start += size
    return parts


def train_val_split(
    n: int, val_size: int | float, seed: int, train_size: int | float | None = None
) -> tuple[list[int], list[int]]:
    """Hold out a random validation set, deterministic per seed; the two index lists are disjoint.

    Args:
        n: number of items in the dataset.
        val_size: validation items, as a count (int) or a fraction of ``n`` in [0, 1) (float;
            a non-zero fraction holds out at least one item).
        seed: the split's seed.
        train_size: training items, as a count or fraction of ``n``; ``None`` takes every item
            not held out. A smaller value subsamples the training set (for quick runs) without
            changing which items are held out, because the validation part is drawn first.

    Returns:
        ``(train_indices, val_indices)``, each sorted.
    """
    n_val = _resolve_size("val_size", val_size, n)
    if n_val > n:
        raise RaysweepError(f"val_size={val_size} exceeds the {n} items in the dataset: lower val_size")
    n_train = n - n_val if train_size is None else _resolve_size("train_size", train_size, n)
    if n_val + n_train > n:
        raise RaysweepError(
            f"val_size={val_size} plus train_size={train_size} is {n_val + n_train} items, more than the "
            f"{n} in the dataset: lower train_size (at most {n - n_val}) or val_size"
        )
    val, train = partition_indices(n, [n_val, n_train], seed)
    return train, val


class Subset(torch.utils.data.Subset):
    """A view of some items of a dataset that keeps its description.

    Same as ``torch.utils.data.Subset`` (``dataset`` and ``indices`` attributes), and also
    exposes the base dataset's ``channels``, ``image_size``, ``factor_names`` and
    ``factor_sizes``, so code that receives a split can size the model and the metrics from it.

    Example:
        >>> train_idx, val_idx = train_val_split(len(ds), val_size=0.1, seed=0)
        >>> train, val = Subset(ds, train_idx), Subset(ds, val_idx)
        >>> train.channels == ds.channels
        True
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        """Wrap ``dataset``; item ``i`` of the subset is item ``indices[i]`` of ``dataset``."""
        super().__init__(dataset, indices)
        self.channels: int = dataset.channels  # type: ignore[attr-defined]
        self.image_size: int = dataset.image_size  # type: ignore[attr-defined]
        self.factor_names: tuple[str, ...] = tuple(dataset.factor_names)  # type: ignore[attr-defined]
        self.factor_sizes: tuple[int, ...] = tuple(dataset.factor_sizes)  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"Subset({self.dataset!r}, {len(self)} items)"
