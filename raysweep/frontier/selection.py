"""Which runs a figure or a claim compares: the groups, the fixed-beta runs, the runs at a matched rate.

Shared by the report's figures (:mod:`raysweep.frontier.plots`) and the claims
(:mod:`raysweep.frontier.claims`), so a panel and a statistic never disagree on what "at a matched
rate" means. Pure functions over the runs table of :func:`raysweep.frontier.collect.runs_frame`.

- A *group* is dataset x model x neural loss (x pixel loss); the ``none`` runs (pure pixel loss)
  of a dataset and model join each of its neural-loss groups as lambda = 0.
- A run has a *rate target* R* (nats) when it is a GECO run (``objective.geco.target_rate``) or a
  matched-rate operating point (child-run tag ``raysweep.target_rate``, or a row of the sweep's
  operating-points table). It is *on target* when ``|rate / R* - 1| <= tolerance`` (relative).
- *Fixed-beta runs* have no rate target and do not come from a ``search.mode: matched_rate`` sweep
  (whose trials probe betas chosen by the search, not a grid).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.tune.matched_rate.points import within_tolerance

#: Relative rate tolerance used when neither the caller nor the sweep (``search.matched_rate.tolerance``) gives one.
DEFAULT_TOLERANCE = 0.05


def groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, runs) per dataset x model x neural loss (x pixel loss when not plain SSE), with the
    ``none`` runs of a dataset x model added to each of its neural-loss groups as lambda = 0."""
    runs = runs.copy()
    runs["pixel_loss"] = runs["pixel_loss"].fillna("sse")
    out: list[tuple[str, pd.DataFrame]] = []
    for (dataset, model, pixel), block in runs.groupby(["dataset", "model", "pixel_loss"], sort=True):
        plain = block[block["loss"] == "none"].assign(lambda_neural=0.0)
        neural = sorted(set(block["loss"]) - {"none"})
        suffix = "" if pixel == "sse" else f" / pixel loss {pixel}"
        for loss in neural or ["none"]:
            own = block[block["loss"] == loss] if loss != "none" else plain
            members = pd.concat([own, plain]) if loss != "none" else own
            out.append((f"{dataset} / {model} / {loss}{suffix}", members.drop_duplicates("run_id")))
    return out


def group_key(members: pd.DataFrame) -> dict[str, str]:
    """``dataset``, ``model``, ``loss`` (the group's neural loss, ``none`` for a pixel-only group)
    and ``pixel_loss`` of one group of :func:`groups`."""
    first = members.iloc[0]
    neural = sorted(set(members["loss"].astype(str)) - {"none"})
    pixel = first.get("pixel_loss")
    return {"dataset": str(first["dataset"]), "model": str(first["model"]), "loss": neural[0] if neural else "none",
            "pixel_loss": "sse" if pixel is None or pixel != pixel else str(pixel)}


def _column(runs: pd.DataFrame, name: str, default: object = np.nan) -> pd.Series:
    return runs[name] if name in runs else pd.Series(default, index=runs.index)


def with_operating_points(runs: pd.DataFrame, points: pd.DataFrame | None) -> pd.DataFrame:
    """`runs` with ``op_target_rate`` (nats) filled from the operating-points table (rows with a
    ``run_id`` and ``target_rate``) where the run's own tag did not set it."""
    runs = runs.copy()
    runs["op_target_rate"] = pd.to_numeric(_column(runs, "op_target_rate"), errors="coerce")
    if points is None or points.empty or "run_id" not in points or "target_rate" not in points:
        return runs
    known = points.dropna(subset=["run_id"]).drop_duplicates("run_id").set_index("run_id")["target_rate"]
    from_table = pd.to_numeric(runs["run_id"].map(known), errors="coerce")
    runs["op_target_rate"] = runs["op_target_rate"].fillna(from_table)
    return runs


def rate_target(runs: pd.DataFrame) -> pd.Series:
    """Each run's rate target R* in nats: its GECO target, else its operating-point target, else NaN."""
    geco = pd.to_numeric(_column(runs, "target_rate"), errors="coerce")
    return geco.fillna(pd.to_numeric(_column(runs, "op_target_rate"), errors="coerce"))


def tolerances(runs: pd.DataFrame, tolerance: float | None = None) -> pd.Series:
    """The relative rate tolerance of each run: `tolerance` when given, else its sweep's
    ``search.matched_rate.tolerance`` (column ``tolerance``), else :data:`DEFAULT_TOLERANCE`."""
    if tolerance is not None:
        return pd.Series(float(tolerance), index=runs.index)
    return pd.to_numeric(_column(runs, "tolerance"), errors="coerce").fillna(DEFAULT_TOLERANCE)


def fixed_beta_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The finished runs of a grid over beta: no rate target, not from a matched-rate sweep."""
    finished = runs["status"] == "finished"
    targeted = rate_target(runs).notna()
    matched_sweep = _column(runs, "sweep_mode", None).astype(object).eq("matched_rate")
    return runs[finished & ~targeted & ~matched_sweep]


def matched_runs(runs: pd.DataFrame, tolerance: float | None = None) -> pd.DataFrame:
    """The finished runs with a rate target, with columns ``rate_target`` (R*, nats),
    ``tolerance_used`` and ``on_target`` (``|rate / R* - 1| <= tolerance``)."""
    target = rate_target(runs)
    chosen = runs[(runs["status"] == "finished") & target.notna()].copy()
    chosen["rate_target"] = target[chosen.index]
    chosen["tolerance_used"] = tolerances(chosen, tolerance)
    chosen["on_target"] = [
        within_tolerance(float(r), float(t), float(tol))
        for r, t, tol in zip(chosen["rate"], chosen["rate_target"], chosen["tolerance_used"], strict=True)
    ]
    return chosen
