"""Claims along training: every claim row recomputed at each validation step, and whether its
verdict had settled by the end.

The paper's claims are about converged rates. A tiny model stopped early can reach the same
distortion at several betas while its rate still moves, so a verdict read at the last validation
may say more about optimisation than about the rate-distortion trade-off. Every validation's
metrics are already in MLflow (:func:`raysweep.frontier.collect.metric_histories`), so each claim
is also read at every earlier validation step at no extra compute: :func:`claims_at_step` replaces
each run's final ``rate``, ``mse`` and ``anisotropy`` by its values at the last validation at or
before that step and computes the claims as :func:`raysweep.frontier.claims.compute_claims` does.

A row with a decision is **settled** when its verdict at the last validation equals its verdict at the validation
nearest :data:`SETTLE_FRACTION` (75%) of training (the nearest strictly before the last; ties go
to the earlier). Otherwise it says ``not settled: train longer``. A row read at a single
validation has ``settled`` None.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from raysweep.frontier.claims import ClaimRow, ClaimSettings, compute_claims
from raysweep.frontier.collect import HISTORY_METRICS

SETTLE_FRACTION = 0.75

#: Columns of the trajectory: the row's key, the step, and what the row read there.
TRAJECTORY_COLUMNS = ("row", "claim", "group", "beta", "lambda_neural", "target_rate", "step", "value", "low",
                      "high", "verdict", "margin")


def row_label(row: ClaimRow) -> str:
    """What names a row across steps: claim, group and where it is taken (``rate_vs_lambda | ... | beta=0.1``)."""
    where = (f"beta={row.beta:g}" if row.beta is not None else f"lambda={row.lambda_neural:g}"
             if row.lambda_neural is not None else f"R*={row.target_rate:g}")
    return f"{row.claim} | {row.group} | {where}"


def runs_at_step(runs: pd.DataFrame, histories: pd.DataFrame, step: int) -> pd.DataFrame:
    """`runs` with each of :data:`HISTORY_METRICS` replaced by the run's value at its last logged
    step at or before `step` (NaN where it has none yet), and ``step`` set to that step."""
    upto = histories[histories["step"] <= step].sort_values("step")
    last = upto.groupby(["run_id", "key"], sort=False).last()
    out = runs.copy()
    for key in HISTORY_METRICS:
        if key in out:
            values = last["value"].xs(key, level="key") if key in last.index.get_level_values("key") else pd.Series()
            out[key] = out["run_id"].map(values).astype(float)
    steps = upto.groupby("run_id")["step"].max()
    out["step"] = out["run_id"].map(steps).astype(float)
    return out


def claims_at_step(runs: pd.DataFrame, histories: pd.DataFrame, step: int, points: pd.DataFrame | None,
                   tolerance: float | None, settings: ClaimSettings) -> list[ClaimRow]:
    """The claim rows as they read at training step `step` (module docstring)."""
    return compute_claims(runs_at_step(runs, histories, step), points, tolerance, settings=settings)


@dataclass
class AlongTraining:
    """The claims at every validation step: ``trajectory`` (one line per row and step, columns
    :data:`TRAJECTORY_COLUMNS`) and the steps read."""

    trajectory: pd.DataFrame
    steps: list[int]


def claims_along_training(rows: Sequence[ClaimRow], runs: pd.DataFrame, histories: pd.DataFrame,
                          points: pd.DataFrame | None, tolerance: float | None,
                          settings: ClaimSettings) -> AlongTraining:
    """Read every claim at each validation step of `histories`, and mark each of `rows` (the claims
    at the end, as :func:`compute_claims` gave them) settled or not (module docstring)."""
    steps = sorted(int(s) for s in histories["step"].unique()) if not histories.empty else []
    lines = []
    finished = runs[runs["status"] == "finished"] if "status" in runs else runs
    for step in steps:
        for row in claims_at_step(finished, histories, step, points, tolerance, settings):
            if row.estimate is None and row.point is None:
                continue
            lines.append((row_label(row), row.claim, row.group, row.beta, row.lambda_neural, row.target_rate, step,
                          row.slope, row.ci_low, row.ci_high, str(row.verdict), row.margin))
    trajectory = pd.DataFrame(lines, columns=list(TRAJECTORY_COLUMNS))
    by_row = dict(tuple(trajectory.groupby("row", sort=False))) if lines else {}
    for row in rows:
        mark_settled(row, by_row.get(row_label(row)))
    return AlongTraining(trajectory, steps)


def mark_settled(row: ClaimRow, path: pd.DataFrame | None) -> None:
    """Set the row's ``settled``, ``check_step``, ``verdict_at_check`` and ``last_step`` from its
    trajectory `path` (None or a single step: not known). Only a row with a decision can have
    settled: one without an interval (insufficient data, withheld) has nothing to settle."""
    if row.decision is None or path is None or path["step"].nunique() < 2:
        return
    path = path.sort_values("step")
    last = float(path["step"].iloc[-1])
    earlier = path[path["step"] < last]
    distance = (earlier["step"] - SETTLE_FRACTION * last).abs().to_numpy()
    check = earlier.iloc[int(np.argmin(distance))]  # argmin takes the first: ties go to the earlier step
    row.last_step, row.check_step = last, float(check["step"])
    row.verdict_at_check = str(check["verdict"])
    row.settled = row.verdict_at_check == str(row.verdict)
