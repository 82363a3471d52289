"""Deterministic train/validation splits and the attribute-keeping Subset."""

from __future__ import annotations

import pytest
import torch

from raysweep.data.splits import ImageDataset, Subset, partition_indices, train_val_split
from raysweep.data.xysquares import XYSquares
from raysweep.errors import RaysweepError


def test_split_is_disjoint_and_covers_everything_by_default() -> None:
    train, val = train_val_split(100, val_size=10, seed=0)
    assert len(val) == 10 and len(train) == 90
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(100))
    assert train == sorted(train) and val == sorted(val)


def test_split_is_deterministic_per_seed() -> None:
    assert train_val_split(1000, 0.1, seed=3) == train_val_split(1000, 0.1, seed=3)
    assert train_val_split(1000, 0.1, seed=3)[1] != train_val_split(1000, 0.1, seed=4)[1]


def test_split_has_a_fixed_value_across_versions() -> None:
    # random.Random's shuffle is stable across Python releases; pin it so that a change to the
    # split (which would silently change every held-out set) is noticed.
    assert train_val_split(10, 3, seed=0) == ([0, 2, 3, 4, 5, 6, 9], [1, 7, 8])
    assert train_val_split(12, 4, seed=1234)[1] == [2, 3, 4, 8]
    assert partition_indices(10, [3], seed=0) == [[1, 7, 8]]


def test_fraction_and_train_size() -> None:
    train, val = train_val_split(200, val_size=0.25, seed=1, train_size=30)
    assert len(val) == 50 and len(train) == 30
    assert not set(train) & set(val)
    # Subsampling the training set does not change which items are held out.
    assert train_val_split(200, val_size=0.25, seed=1)[1] == val
    assert len(train_val_split(5, val_size=0.01, seed=0)[1]) == 1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"val_size": 11}, "val_size=11"),
        ({"val_size": 1.5}, "val_size=1.5"),
        ({"val_size": -1}, "val_size=-1"),
        ({"val_size": 4, "train_size": 7}, "train_size=7"),
    ],
)
def test_impossible_splits_raise(kwargs: dict[str, float], named: str) -> None:
    with pytest.raises(RaysweepError, match=named.replace(".", r"\.")):
        train_val_split(10, seed=0, **kwargs)  # type: ignore[arg-type]


def test_subset_keeps_the_dataset_description() -> None:
    data = XYSquares(image_size=16, square_size=4, grid_size=3, num_squares=2, rgb=False)
    train, val = train_val_split(len(data), val_size=10, seed=0)
    subset = Subset(data, val)
    assert len(subset) == 10
    assert subset.channels == 1 and subset.image_size == 16
    assert subset.factor_names == data.factor_names and subset.factor_sizes == data.factor_sizes
    assert torch.equal(subset[2][0], data[val[2]][0])
    assert isinstance(subset, ImageDataset) and isinstance(data, ImageDataset)
    nested = Subset(subset, [0, 1])
    assert nested.factor_sizes == data.factor_sizes
    assert torch.equal(nested[1][1], data[val[1]][1])
