"""XYSquares: factor bookkeeping, pixels, the equal-distance property, and geometry errors."""

from __future__ import annotations

import itertools

import pytest
import torch

from raysweep.data.xysquares import XYSquares
from raysweep.errors import RaysweepError


def test_default_geometry_matches_the_paper() -> None:
    data = XYSquares()
    assert len(data) == 8**6 == 262_144
    assert data.channels == 3
    assert data.image_size == 64
    assert data.factor_names == ("x_R", "y_R", "x_G", "y_G", "x_B", "y_B")
    assert data.factor_sizes == (8,) * 6
    image, factors = data[12_345]
    assert image.shape == (3, 64, 64)
    assert image.dtype == torch.float32
    assert factors.dtype == torch.long
    assert factors.shape == (6,)


def test_grey_names_channels_and_length() -> None:
    data = XYSquares(image_size=16, square_size=4, grid_size=4, num_squares=2, rgb=False)
    assert data.channels == 1
    assert data.factor_names == ("x_0", "y_0", "x_1", "y_1")
    assert len(data) == 4**4
    assert data[0][0].shape == (1, 16, 16)


def test_factor_round_trip_every_index_of_a_small_grid() -> None:
    data = XYSquares(image_size=12, square_size=4, grid_size=3, num_squares=2)
    indices = torch.arange(len(data))
    factors = data.index_to_factors(indices)
    assert factors.shape == (81, 4)
    assert torch.equal(data.factors_to_index(factors), indices)
    # Every combination appears exactly once.
    assert len({tuple(row) for row in factors.tolist()}) == len(data)
    # Mixed radix with the first factor most significant, like numpy.unravel_index.
    assert data.index_to_factors(1).tolist() == [0, 0, 0, 1]
    assert data.index_to_factors(27).tolist() == [1, 0, 0, 0]
    assert data.factors_to_index([2, 1, 0, 2]) == 2 * 27 + 1 * 9 + 0 * 3 + 2


def test_round_trip_on_the_default_grid() -> None:
    data = XYSquares()
    for index in (0, 1, 7, 8, 4095, 123_456, len(data) - 1):
        factors = data.index_to_factors(index)
        assert data.factors_to_index(factors.tolist()) == index
        assert torch.equal(data[index][1], factors)


def test_pixels_are_minus_one_or_plus_one_with_squares_of_the_right_area() -> None:
    data = XYSquares()
    image, _ = data[777]
    assert set(image.unique().tolist()) == {-1.0, 1.0}
    # Each channel holds exactly one 8x8 square.
    assert ((image == 1.0).sum(dim=(1, 2)) == 64).all()


def test_square_positions_match_factors() -> None:
    data = XYSquares()
    factors = [3, 5, 0, 7, 6, 1]  # x_R, y_R, x_G, y_G, x_B, y_B
    image, returned = data[data.factors_to_index(factors)]
    assert returned.tolist() == factors
    for channel in range(3):
        x, y = factors[2 * channel], factors[2 * channel + 1]
        top, left = 8 * y, 8 * x  # x indexes columns, y rows
        region = image[channel, top : top + 8, left : left + 8]
        assert (region == 1.0).all()
        mask = torch.ones(64, 64, dtype=torch.bool)
        mask[top : top + 8, left : left + 8] = False
        assert (image[channel][mask] == -1.0).all()


def test_smaller_grid_is_centred() -> None:
    data = XYSquares(image_size=20, square_size=4, grid_size=3, grid_spacing=4, num_squares=1)
    assert data.grid_offset == (20 - 12) // 2
    image, _ = data[0]
    assert (image[0, 4:8, 4:8] == 1.0).all()
    assert (image == 1.0).sum() == 16


def test_spacing_below_size_overlaps_neighbouring_positions() -> None:
    data = XYSquares(image_size=16, square_size=4, grid_spacing=2, grid_size=7, num_squares=1)
    first, _ = data[data.factors_to_index([0, 0])]
    neighbour, _ = data[data.factors_to_index([1, 0])]
    far, _ = data[data.factors_to_index([6, 0])]
    assert ((first == 1.0) & (neighbour == 1.0)).sum() == 8  # two shared columns of four pixels
    assert ((first == 1.0) & (far == 1.0)).sum() == 0
    # Overlap makes pixel distance grow with grid distance: an ordering the VAE can learn.
    assert torch.mean((first - neighbour) ** 2) < torch.mean((first - far) ** 2)


@pytest.mark.parametrize("rgb", [True, False])
@pytest.mark.parametrize("spacing", [4, 5])
def test_spacing_at_least_size_makes_all_pairs_equally_far(rgb: bool, spacing: int) -> None:
    data = XYSquares(image_size=16, square_size=4, grid_size=3, grid_spacing=spacing, num_squares=1, rgb=rgb)
    images = [data[i][0] for i in range(len(data))]
    distances = {
        round(torch.mean((a - b) ** 2).item(), 6) for a, b in itertools.combinations(images, 2)
    }
    assert len(distances) == 1
    assert distances.pop() > 0


def test_moving_one_of_three_squares_costs_the_same_whatever_the_distance() -> None:
    data = XYSquares()
    base = data.render([0, 0, 4, 4, 7, 7])
    distances = {
        torch.mean((base - data.render([x, 0, 4, 4, 7, 7])) ** 2).item() for x in range(1, 8)
    }
    distances |= {torch.mean((base - data.render([0, 0, 4, y, 7, 7])) ** 2).item() for y in range(5, 8)}
    assert len(distances) == 1


def test_grey_overlapping_squares_stay_at_max() -> None:
    data = XYSquares(image_size=16, square_size=4, grid_size=4, num_squares=3, rgb=False)
    image = data.render([1, 1, 1, 1, 2, 2])  # squares 0 and 1 coincide
    assert set(image.unique().tolist()) == {-1.0, 1.0}
    assert (image == 1.0).sum() == 32


def test_deterministic_across_instances_and_reads() -> None:
    first, second = XYSquares(), XYSquares()
    for index in (0, 99_999, 262_143):
        a, fa = first[index]
        b, fb = second[index]
        assert torch.equal(a, b) and torch.equal(fa, fb)
        assert torch.equal(first[index][0], a)


def test_negative_and_out_of_range_indices() -> None:
    data = XYSquares(image_size=8, square_size=4, grid_size=2, num_squares=1)
    assert torch.equal(data[-1][0], data[len(data) - 1][0])
    with pytest.raises(IndexError):
        data[len(data)]
    with pytest.raises(IndexError):
        data.index_to_factors(len(data))


def test_max_grid_size() -> None:
    assert XYSquares.max_grid_size() == 8
    assert XYSquares.max_grid_size(image_size=64, square_size=8, grid_spacing=4) == 15
    assert XYSquares.max_grid_size(image_size=10, square_size=4, grid_spacing=3) == 3
    assert XYSquares.max_grid_size(image_size=4, square_size=8) == 0


def test_grid_size_none_takes_the_largest_that_fits() -> None:
    data = XYSquares(image_size=32, square_size=8, grid_spacing=4, grid_size=None, num_squares=1)
    assert data.grid_size == 7
    assert (data.grid_size - 1) * data.grid_spacing + data.square_size <= 32


def test_grid_that_does_not_fit_names_the_arguments_and_the_fix() -> None:
    with pytest.raises(RaysweepError) as raised:
        XYSquares(grid_size=9)
    message = str(raised.value)
    assert "grid_size=9" in message and "image_size=64" in message and "grid_size <= 8" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"square_size": 80}, "square_size=80"),
        ({"num_squares": 4}, "num_squares=4"),
        ({"num_squares": 0}, "num_squares=0"),
        ({"grid_spacing": 0}, "grid_spacing=0"),
        ({"grid_size": 0}, "grid_size=0"),
        ({"image_size": -1}, "image_size=-1"),
        ({"square_size": 2.5}, "square_size=2.5"),
    ],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(RaysweepError, match=named.replace(".", r"\.")) as raised:
        XYSquares(**kwargs)  # type: ignore[arg-type]
    assert "\n" not in str(raised.value)


def test_works_with_a_dataloader() -> None:
    data = XYSquares(image_size=16, square_size=4, grid_size=4, num_squares=2)
    images, factors = next(iter(torch.utils.data.DataLoader(data, batch_size=5)))
    assert images.shape == (5, 3, 16, 16)
    assert factors.shape == (5, 4)
    assert factors[:, -1].tolist() == [0, 1, 2, 3, 0]
