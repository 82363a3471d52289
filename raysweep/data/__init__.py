"""Datasets: XYSquares generated on the fly (needs no download), CelebA, Tiny-ImageNet and any
folder of images. Items are ``(image, factors)`` with images (C, H, W) in [-1, 1]."""

from __future__ import annotations

import random

from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.data.cache import CachedImages, cache_dataset
from raysweep.data.folders import CelebA, ImageFolderDataset, TinyImageNet
from raysweep.data.splits import Subset, partition_indices, train_val_split
from raysweep.data.xysquares import XYSquares

__all__ = [
    "XYSquares", "CelebA", "TinyImageNet", "ImageFolderDataset", "CachedImages", "Subset", "build_datasets",
    "build_latent_sample",
]

# Salt of the latent sample's draw, so it differs from the validation split of the same split_seed.
LATENT_SAMPLE_SALT = 7_919


def _cap(dataset: Dataset, size: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most `size` items (the dataset itself when smaller)."""
    n = len(dataset)  # type: ignore[arg-type]
    if size is None or size >= n:
        return dataset
    (chosen,) = partition_indices(n, [size], seed)
    return Subset(dataset, chosen)


def _xysquares(cfg: DataConfig) -> XYSquares:
    sq = cfg.xysquares
    return XYSquares(
        image_size=cfg.image_size, square_size=sq.square_size, grid_size=sq.grid_size,
        grid_spacing=sq.grid_spacing, num_squares=sq.num_squares, rgb=sq.rgb,
    )


def build_latent_sample(cfg: DataConfig) -> Dataset | None:
    """The images whose posterior means estimate the aggregated-posterior statistics and MIG.

    For a generated dataset: ``data.latent_sample_size`` images drawn at random from the whole
    dataset (the data distribution the aggregated posterior is defined over), the same for every
    trial of a ``data.split_seed``. None for datasets read from folders: their validation set is
    the sample.
    """
    if cfg.dataset != "xysquares":
        return None
    full = _xysquares(cfg)
    size = min(cfg.latent_sample_size, len(full))
    # sample() draws without shuffling the whole index range (XYSquares may hold millions).
    chosen = sorted(random.Random(cfg.split_seed + LATENT_SAMPLE_SALT).sample(range(len(full)), size))
    return Subset(full, chosen)


def build_datasets(cfg: DataConfig, progress: bool | None = None) -> tuple[Dataset, Dataset]:
    """The training and validation sets described by the ``data`` block.

    Datasets with an official split (CelebA's partition file, Tiny-ImageNet's val folder) use it,
    with ``data.val_size`` / ``data.train_size`` as caps; the others hold out ``data.val_size``
    images at random, deterministically per ``data.split_seed`` (not the training seed, so trials
    with different seeds are validated on the same images).

    Folder datasets with ``data.cache`` (the default) are read from their prepared caches in
    ``data.cache_dir`` (:mod:`raysweep.data.cache`), built here when missing (a tqdm bar on stderr
    when ``progress``, default when stderr is a terminal): each cache holds exactly the images of its
    split, so the items are the same images, bit for bit, as with ``data.cache: false``.
    """
    size, seed = cfg.image_size, cfg.split_seed
    if cfg.dataset == "xysquares":
        full: Dataset = _xysquares(cfg)
        train_idx, val_idx = train_val_split(len(full), cfg.val_size, seed, cfg.train_size)  # type: ignore[arg-type]
        return Subset(full, train_idx), Subset(full, val_idx)
    if cfg.dataset == "image_folder":
        full = ImageFolderDataset(cfg.root, image_size=size)  # type: ignore[arg-type]
        train_idx, val_idx = train_val_split(len(full), cfg.val_size, seed, cfg.train_size)  # type: ignore[arg-type]
        train: Dataset = Subset(full, train_idx)
        val: Dataset = Subset(full, val_idx)
    elif cfg.dataset == "celeba":
        train = CelebA(cfg.root, split="train", image_size=size, split_seed=seed)  # type: ignore[arg-type]
        val = CelebA(cfg.root, split="val", image_size=size, split_seed=seed)  # type: ignore[arg-type]
        train, val = _cap(train, cfg.train_size, seed), _cap(val, cfg.val_size, seed + 1)
    else:
        train = TinyImageNet(cfg.root, split="train", image_size=size)  # type: ignore[arg-type]
        val = TinyImageNet(cfg.root, split="val", image_size=size)  # type: ignore[arg-type]
        train, val = _cap(train, cfg.train_size, seed), _cap(val, cfg.val_size, seed + 1)
    if not cfg.cache:
        return train, val
    options = {"progress": progress, "workers": cfg.num_workers}
    return (
        cache_dataset(train, cfg.cache_dir, label=f"{cfg.dataset}-train", **options),  # type: ignore[arg-type]
        cache_dataset(val, cfg.cache_dir, label=f"{cfg.dataset}-val", **options),  # type: ignore[arg-type]
    )
