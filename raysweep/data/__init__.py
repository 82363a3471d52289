"""Datasets: XYSquares generated on the fly (needs no download), CelebA, Tiny-ImageNet and any
folder of images. Items are ``(image, factors)`` with images (C, H, W) in [-1, 1]."""

from __future__ import annotations

from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.data.folders import CelebA, ImageFolderDataset, TinyImageNet
from raysweep.data.splits import Subset, partition_indices, train_val_split
from raysweep.data.xysquares import XYSquares

__all__ = ["XYSquares", "CelebA", "TinyImageNet", "ImageFolderDataset", "Subset", "build_datasets"]


def _cap(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most `size` items (the dataset itself when smaller)."""
    n = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= n:
        return dataset
    (chosen,) = partition_indices(n, [size], seed)
    return Subset(dataset, chosen)


def build_datasets(cfg: DataConfig) -> tuple[Dataset, Dataset]:
    """The training and validation sets described by the ``data`` block.

    Datasets with an official split (CelebA's partition file, Tiny-ImageNet's val folder) use it,
    with ``data.val_size`` / ``data.train_size`` as caps; the others hold out ``data.val_size``
    images at random, deterministically per ``data.split_seed`` (not the training seed, so trials
    with different seeds are validated on the same images).
    """
    size, seed = cfg.image_size, cfg.split_seed
    if cfg.dataset == "xysquares":
        sq = cfg.xysquares
        full: Dataset = XYSquares(
            image_size=size, square_size=sq.square_size, grid_size=sq.grid_size, grid_spacing=sq.grid_spacing,
            num_squares=sq.num_squares, rgb=sq.rgb,
        )
    elif cfg.dataset == "image_folder":
        full = ImageFolderDataset(cfg.root, image_size=size)  # type: ignore[arg-type]
    elif cfg.dataset == "celeba":
        train = CelebA(cfg.root, split="train", image_size=size, split_seed=seed)  # type: ignore[arg-type]
        val = CelebA(cfg.root, split="val", image_size=size, split_seed=seed)  # type: ignore[arg-type]
        return _cap(train, cfg.train_size, seed), _cap(val, cfg.val_size, seed + 1)
    else:
        train = TinyImageNet(cfg.root, split="train", image_size=size)  # type: ignore[arg-type]
        val = TinyImageNet(cfg.root, split="val", image_size=size)  # type: ignore[arg-type]
        return _cap(train, cfg.train_size, seed), _cap(val, cfg.val_size, seed + 1)
    train_idx, val_idx = train_val_split(len(full), cfg.val_size, seed, cfg.train_size)  # type: ignore[arg-type]
    return Subset(full, train_idx), Subset(full, val_idx)
