"""Datasets: what a trial trains and validates on. Items are ``(image, factors)`` with images
(C, H, W) in [-1, 1].

Each dataset is one module that registers its builder under its name (the names and their facts
are declared in :mod:`raysweep.registry`); :func:`build_datasets` splits, caps and caches whatever
the registered builder returns, the same way for every dataset. Modules, top down:

- ``xysquares``: XYSquares, squares on a grid, generated from the index (seed 003).
- ``folders``: CelebA, Tiny-ImageNet and any image folder, read from ``data.root``.
- ``photo_patches``: patches of the photographs the scikit-image wheel ships (extra ``photos``).
- ``cache``: a folder dataset decoded once into a memory-mapped uint8 array shared by the trials.
- ``splits``: seeded train/validation splits and a subset that keeps the dataset's description.
"""

from __future__ import annotations

import random

from torch.utils.data import Dataset

from raysweep.config import DataConfig
from raysweep.data.cache import CachedImages, cache_dataset
from raysweep.data.folders import CelebA, ImageFolderDataset, TinyImageNet
from raysweep.data.photo_patches import PhotoPatches
from raysweep.data.splits import Subset, partition_indices, train_val_split
from raysweep.data.xysquares import XYSquares
from raysweep.registry import DATASETS

__all__ = [
    "XYSquares", "CelebA", "TinyImageNet", "ImageFolderDataset", "PhotoPatches", "CachedImages", "Subset",
    "build_datasets", "build_latent_sample",
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


def _pool_or_pair(cfg: DataConfig) -> Dataset | tuple[Dataset, Dataset]:
    """What the registered builder of ``data.dataset`` returns: one pool, or an official (train, val)."""
    return DATASETS.code(cfg.dataset)(cfg)


def build_latent_sample(cfg: DataConfig) -> Dataset | None:
    """The images whose posterior means estimate the aggregated-posterior statistics and MIG.

    For a generated dataset: ``data.latent_sample_size`` images drawn at random from the whole
    dataset (the data distribution the aggregated posterior is defined over), the same for every
    trial of a ``data.split_seed``. None for the other datasets: their validation set is the sample.
    """
    if not DATASETS[cfg.dataset].generated:
        return None
    full = _pool_or_pair(cfg)
    if isinstance(full, tuple):
        raise TypeError(f"{cfg.dataset}: a generated dataset's builder must return one pool, not a split")
    size = min(cfg.latent_sample_size, len(full))  # type: ignore[arg-type]
    # sample() draws without shuffling the whole index range (XYSquares may hold millions).
    chosen = sorted(random.Random(cfg.split_seed + LATENT_SAMPLE_SALT).sample(range(len(full)), size))  # type: ignore[arg-type]
    return Subset(full, chosen)


def build_datasets(cfg: DataConfig, progress: bool | None = None) -> tuple[Dataset, Dataset]:
    """The training and validation sets described by the ``data`` block.

    A registered builder returns either one pool or an official (train, val) split.
    Datasets with an official split (CelebA's partition file, Tiny-ImageNet's val folder, the
    photographs' regions of photo_patches) use it,
    with ``data.val_size`` / ``data.train_size`` as caps; the others hold out ``data.val_size``
    images at random, deterministically per ``data.split_seed`` (not the training seed, so trials
    with different seeds are validated on the same images).

    Cacheable datasets (the folder datasets) with ``data.cache`` (the default) are read from their prepared caches in
    ``data.cache_dir`` (:mod:`raysweep.data.cache`), built here when missing (a tqdm bar on stderr
    when ``progress``, default when stderr is a terminal): each cache holds exactly the images of its
    split, so the items are the same images, bit for bit, as with ``data.cache: false``.
    """
    seed = cfg.split_seed
    made = _pool_or_pair(cfg)
    if isinstance(made, tuple):
        train, val = made
        train, val = _cap(train, cfg.train_size, seed), _cap(val, cfg.val_size, seed + 1)
    else:
        train_idx, val_idx = train_val_split(len(made), cfg.val_size, seed, cfg.train_size)  # type: ignore[arg-type]
        train, val = Subset(made, train_idx), Subset(made, val_idx)
    if not (DATASETS[cfg.dataset].cacheable and cfg.cache):
        return train, val
    options = {"progress": progress, "workers": cfg.num_workers}
    return (
        cache_dataset(train, cfg.cache_dir, label=f"{cfg.dataset}-train", **options),  # type: ignore[arg-type]
        cache_dataset(val, cfg.cache_dir, label=f"{cfg.dataset}-val", **options),  # type: ignore[arg-type]
    )
