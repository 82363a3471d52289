"""Pareto-optimal points of a rate-distortion cloud, both coordinates minimised.

A point (R_i, D_i) is *dominated* when another point has R_j <= R_i and D_j <= D_i with at least
one inequality strict; the Pareto set (the empirical rate-distortion frontier) is every point that
is not dominated. Exact duplicates do not dominate each other, so both stay. Points with a NaN or
infinite coordinate (a diverged run) are never on the frontier and never dominate.

Example::

    >>> pareto_mask([1.0, 2.0, 2.0, 3.0], [3.0, 1.0, 2.0, 1.0]).tolist()
    [True, True, False, False]
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike


def pareto_mask(rate: ArrayLike, distortion: ArrayLike) -> np.ndarray:
    """Boolean mask of the Pareto-optimal points, minimising both `rate` and `distortion`.

    O(n log n): sort by rate (ties by distortion), then a point is optimal when its distortion is
    strictly below every distortion seen at a strictly lower rate, and it is the best of its
    equal-rate group.
    """
    r = np.asarray(rate, dtype=float)
    d = np.asarray(distortion, dtype=float)
    if r.shape != d.shape or r.ndim != 1:
        raise ValueError(f"rate and distortion must be 1-d arrays of one length, got {r.shape} and {d.shape}")
    mask = np.zeros(r.shape, dtype=bool)
    finite = np.flatnonzero(np.isfinite(r) & np.isfinite(d))
    order = finite[np.lexsort((d[finite], r[finite]))]
    best_below = np.inf  # lowest distortion among points of strictly lower rate
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and r[order[j]] == r[order[i]]:
            j += 1
        group = order[i:j]
        group_best = d[group[0]]  # sorted by distortion within the rate group
        if group_best < best_below:
            mask[group[d[group] == group_best]] = True
        best_below = min(best_below, group_best)
        i = j
    return mask


def pareto_front(frame: pd.DataFrame, rate: str = "rate", distortion: str = "mse") -> pd.DataFrame:
    """The rows of `frame` on the Pareto frontier of (`rate`, `distortion`), sorted by rate."""
    if frame.empty:
        return frame.copy()
    mask = pareto_mask(frame[rate].to_numpy(dtype=float), frame[distortion].to_numpy(dtype=float))
    return frame[mask].sort_values([rate, distortion])
