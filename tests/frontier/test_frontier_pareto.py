"""Pareto extraction (minimise rate and distortion) on hand-made points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from raysweep.frontier.pareto import pareto_front, pareto_mask


def _brute_force(rate: np.ndarray, distortion: np.ndarray) -> np.ndarray:
    ok = np.isfinite(rate) & np.isfinite(distortion)
    out = np.zeros(len(rate), dtype=bool)
    for i in np.flatnonzero(ok):
        dominated = any(
            ok[j] and rate[j] <= rate[i] and distortion[j] <= distortion[i]
            and (rate[j] < rate[i] or distortion[j] < distortion[i])
            for j in range(len(rate))
        )
        out[i] = not dominated
    return out


def test_hand_made_frontier() -> None:
    # (rate nats, mse per pixel):
    #   A (1, 9) B (2, 5) C (3, 5.5) D (4, 2) E (5, 2) F (6, 1) G (2, 6) H (7, 1) I (0.5, nan)
    # A, B, D, F are optimal; C and G are dominated by B; E by D (equal distortion, more rate);
    # H by F; I has no distortion (a diverged run) and is left out.
    rate = [1, 2, 3, 4, 5, 6, 2, 7, 0.5]
    mse = [9, 5, 5.5, 2, 2, 1, 6, 1, float("nan")]
    assert pareto_mask(rate, mse).tolist() == [True, True, False, True, False, True, False, False, False]


def test_duplicates_both_stay_and_equal_rate_keeps_the_best() -> None:
    assert pareto_mask([1, 1, 1, 2], [3, 3, 4, 1]).tolist() == [True, True, False, True]


def test_single_and_empty() -> None:
    assert pareto_mask([3.0], [0.2]).tolist() == [True]
    assert pareto_mask([], []).tolist() == []


def test_agrees_with_brute_force_on_random_clouds_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        rate = rng.integers(0, 8, n).astype(float)
        distortion = rng.integers(0, 8, n).astype(float)
        distortion[rng.random(n) < 0.1] = np.inf
        assert pareto_mask(rate, distortion).tolist() == _brute_force(rate, distortion).tolist()


def test_pareto_front_sorts_rows_by_rate() -> None:
    frame = pd.DataFrame({"rate": [4.0, 1.0, 2.0, 3.0], "mse": [0.1, 0.9, 0.95, 0.2], "run": list("abcd")})
    assert pareto_front(frame)["run"].tolist() == ["b", "d", "a"]


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="one length"):
        pareto_mask([1, 2], [1])
