"""Which runs a figure or a claim compares: the groups, the fixed-beta runs, the runs at a matched rate.

Shared by the report's figures (:mod:`raysweep.frontier.plots`) and the claims
(:mod:`raysweep.frontier.claims`), so a panel and a statistic never disagree on what "at a matched
rate" means. Pure functions over the runs table of :func:`raysweep.frontier.collect.runs_frame`.

- A *group* is dataset x model x neural loss (x pixel loss) x *condition*; the ``none`` runs (pure
  pixel loss) of a dataset and model join each of its neural-loss groups as lambda = 0.
- A *condition* is a value of every other config key that varies among a group's runs: a claim
  compares runs that differ only in lambda (or beta, or the rate target) and the seed, so runs
  that differ in grid spacing, the balancer, the latent size, the run length... are different
  conditions (:func:`split_conditions`). Not conditions: the compared keys
  (:data:`COMPARED_KEYS`), run bookkeeping that does not change what is trained
  (:data:`BOOKKEEPING_KEYS`), and a key that does not apply to a run (another neural loss's block,
  GECO's settings on a fixed-beta run, pretrained weights on a loss without weights). A lambda = 0
  baseline joins every condition it matches.
- A run has a *rate target* R* (nats) when it is a GECO run (``objective.geco.target_rate``) or a
  matched-rate operating point (child-run tag ``raysweep.target_rate``, or a row of the sweep's
  operating-points table). It is *on target* when ``|rate / R* - 1| <= tolerance`` (relative).
- *Fixed-beta runs* have no rate target and do not come from a ``search.mode: matched_rate`` sweep
  (whose trials probe betas chosen by the search, not a grid).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysweep.registry import NEURAL_TERMS, PIXEL_TERMS, SEARCH_MODES
from raysweep.tune.matched_rate.points import within_tolerance

#: Relative rate tolerance used when neither the caller nor the sweep (``search.matched_rate.tolerance``) gives one.
DEFAULT_TOLERANCE = 0.05


#: Config keys a claim compares along, or that define the group itself: never a condition.
COMPARED_KEYS = frozenset({"loss.lambda_neural", "objective.beta", "objective.geco.target_rate", "train.seed",
                           "loss.neural", "data.dataset", "model.arch", "loss.pixel"})
#: Config keys that change where or how a run is kept, not what is trained: never a condition.
BOOKKEEPING_KEYS = frozenset({"data.root", "data.num_workers", "data.cache", "data.cache_dir", "loss.weights_dir",
                              "train.device", "train.keep_checkpoints", "train.val_every", "train.log_images"})
#: The ``loss.neural`` value of the pure pixel-loss runs (lambda = 0 of every neural group), the
#: default pixel loss (a group's title names any other), the neural losses whose networks load
#: pretrained weights (``loss.pretrained`` applies to them alone) and each term's own config block
#: (which applies to its runs alone): all from the term registry.
NO_NEURAL = next(spec.name for spec in NEURAL_TERMS if not spec.builds_term)
DEFAULT_PIXEL = PIXEL_TERMS.default
WEIGHTED_LOSSES = frozenset(spec.name for spec in NEURAL_TERMS if spec.weights)
TERM_BLOCKS = {spec.block: spec.name for spec in NEURAL_TERMS if spec.block}
PARAMS = "params."


def _text(value: object) -> object:
    """A param as compared across runs: numbers in one spelling (``4`` and ``4.0`` agree), NaN for missing."""
    if value is None or (isinstance(value, float) and value != value):
        return np.nan
    text = str(value)
    try:
        return f"{float(text):.12g}"
    except ValueError:
        return text


def condition_values(runs: pd.DataFrame) -> pd.DataFrame:
    """Per run, the value of every config key that can make a condition (``params.<key>`` columns
    less :data:`COMPARED_KEYS` and :data:`BOOKKEEPING_KEYS`), NaN where the key does not apply to
    the run (module docstring); columns are the dotted keys."""
    keys = [c[len(PARAMS):] for c in runs.columns
            if c.startswith(PARAMS) and c[len(PARAMS):] not in COMPARED_KEYS | BOOKKEEPING_KEYS]
    values = pd.DataFrame({k: runs[PARAMS + k].map(_text) for k in keys}, index=runs.index)
    neural = runs["loss"].astype(str)
    targeted = rate_target(runs).notna()
    for key in keys:
        owner = next((name for block, name in TERM_BLOCKS.items() if key.startswith(block + ".")), None)
        if owner is not None:
            values.loc[neural != owner, key] = np.nan  # another loss's block
        elif key == "loss.pretrained":
            values.loc[~neural.isin(WEIGHTED_LOSSES), key] = np.nan
        elif key.startswith("objective.geco."):
            values.loc[~targeted, key] = np.nan  # GECO settings of a fixed-beta run
    return values


def _label(keys: list[str], combo: tuple) -> str:
    short = [k.rsplit(".", 1)[-1] for k in keys]
    names = [s if short.count(s) == 1 else k for s, k in zip(short, keys, strict=True)]
    return ", ".join(f"{n}={v}" for n, v in zip(names, combo, strict=True) if v == v)


def split_conditions(members: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(condition, runs) per distinct value of the keys that vary among `members` (module
    docstring); one ('', members) when none varies. The neural runs define the conditions; each
    lambda = 0 baseline (``loss.neural: none``) joins every condition it matches on the keys it has,
    and baselines that match none form conditions of their own (nothing is dropped)."""
    values = condition_values(members)
    varying = [k for k in values.columns if values[k].dropna().nunique() > 1]
    if not varying:
        return [("", members)]
    values = values[varying]
    neural = members["loss"].astype(str) != NO_NEURAL
    defining = values[neural] if neural.any() else values
    combos = list(dict.fromkeys(tuple(r) for r in defining.itertuples(index=False)))
    out, joined = [], pd.Series(False, index=members.index)
    for combo in sorted(combos, key=lambda c: tuple(str(v) for v in c)):
        wanted = pd.Series(combo, index=varying)
        same = (values.eq(wanted) | values.isna() | wanted.isna().to_numpy()).all(axis=1)
        own = defining.index[(defining.eq(wanted) | (defining.isna() & wanted.isna().to_numpy())).all(axis=1)]
        at = same & ~neural if neural.any() else pd.Series(False, index=members.index)
        at[own] = True
        joined |= at
        out.append((_label(varying, combo), members[at]))
    for combo, rest in members[~joined].groupby(values[~joined].apply(tuple, axis=1), sort=True):
        out.append((_label(varying, combo), rest))
    return out


def groups(runs: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, runs) per dataset x model x neural loss (x pixel loss when not plain SSE) x condition,
    with the ``none`` runs of a dataset x model added to each of its neural-loss groups as
    lambda = 0; the runs carry their condition in the column ``condition`` ('' when the group has
    one), and the title ends with it."""
    runs = runs.copy()
    runs["pixel_loss"] = runs["pixel_loss"].fillna(DEFAULT_PIXEL)
    out: list[tuple[str, pd.DataFrame]] = []
    for (dataset, model, pixel), block in runs.groupby(["dataset", "model", "pixel_loss"], sort=True):
        plain = block[block["loss"] == NO_NEURAL].assign(lambda_neural=0.0)
        neural = sorted(set(block["loss"]) - {NO_NEURAL})
        suffix = "" if pixel == DEFAULT_PIXEL else f" / pixel loss {pixel}"
        for loss in neural or [NO_NEURAL]:
            own = block[block["loss"] == loss] if loss != NO_NEURAL else plain
            members = pd.concat([own, plain]) if loss != NO_NEURAL else own
            for condition, at in split_conditions(members.drop_duplicates("run_id")):
                title = f"{dataset} / {model} / {loss}{suffix}" + (f" / {condition}" if condition else "")
                out.append((title, at.assign(condition=condition)))
    return out


def group_key(members: pd.DataFrame) -> dict[str, str]:
    """``dataset``, ``model``, ``loss`` (the group's neural loss, ``none`` for a pixel-only group),
    ``pixel_loss`` and ``condition`` of one group of :func:`groups`."""
    first = members.iloc[0]
    neural = sorted(set(members["loss"].astype(str)) - {NO_NEURAL})
    pixel = first.get("pixel_loss")
    return {"dataset": str(first["dataset"]), "model": str(first["model"]), "loss": neural[0] if neural else NO_NEURAL,
            "pixel_loss": DEFAULT_PIXEL if pixel is None or pixel != pixel else str(pixel),
            "condition": str(first.get("condition") or "")}


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
    searches_beta = [spec.name for spec in SEARCH_MODES if not spec.fixed_beta]  # a matched-rate sweep's probes
    matched_sweep = _column(runs, "sweep_mode", None).astype(object).isin(searches_beta)
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
