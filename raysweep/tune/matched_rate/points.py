"""Matched-rate operating points: the trial conventions they rest on, and the table they form
(its model and its files; no Ray, no MLflow: :mod:`raysweep.tracking.operating_points` logs it,
:mod:`raysweep.frontier.operating_points` draws it).

A *task* is one (cell, target, seed): a cell is one combination of the swept keys other than the KL
weight and the seed (for example ``loss.lambda_neural=0.5``), a target is a rate R* in nats, the seed
is ``train.seed`` from ``search.seeds`` (None without it). Its *operating
point* is the trial whose converged rate is closest to R*: the beta that put it there, the rate
it reached, its distortion and anisotropy, and what the search for it cost (every trial of the
task, stopped ones included, and the epochs they trained).

Conventions shared by the searchers (:mod:`raysweep.tune.matched_rate.searchers`), the trainable
and this module:

- every matched-rate trial config carries ``META_KEY`` (``"_matched_rate"``), a mapping with
  ``cell`` (label), ``cell_params`` (dotted key -> value, the seed left out), ``target`` (nats),
  ``strategy`` and ``seed`` (``train.seed`` of a sweep with ``search.seeds``, else None).
  It is not a trial block: the trainable removes it with :func:`split_trial_config` before it
  validates the rest as a ``TrialConfig``;
- every reported result carries ``rate`` (nats), ``epoch`` (passes over the training set so
  far), ``rate_error = |log(rate / target)|`` and ``progress`` (fraction of the planned training
  done, 1.0 on the last report). :func:`matched_rate_report` adds the last two to the training
  loop's reports. A trial counts as *converged* when its last result has ``progress >= 1``: a
  trial stopped early by ASHA or a stopper reports its rate mid-training, not a converged one.
  (Tune marks a scheduler-stopped trial's last result ``done`` too, so ``done`` cannot tell them
  apart.) A result without ``progress`` counts as converged, so a trainable that does not report
  it must not be early-stopped.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from raysweep.names import OPERATING_POINTS_CSV, OPERATING_POINTS_JSON
from raysweep.registry import MATCHED_RATE_STRATEGIES

META_KEY = "_matched_rate"
RATE_ERROR = "rate_error"
PROGRESS = "progress"
BETA_KEY = "objective.beta"  # what bisection and optuna search
GECO_TARGET_KEY = "objective.geco.target_rate"  # what the geco strategy sets
TARGET_KEY = "_target"  # the rate target of a probing strategy's trial (in its META_KEY), as run names show it
SEED_KEY = "train.seed"  # search.seeds: each seed of a cell is its own task, with its own operating point
_MIN_RATE = 1e-6  # nats: a collapsed posterior (rate 0) gets a large but finite rate_error


def rate_error(rate: float, target: float) -> float:
    """``|log(rate / target)|`` (dimensionless), the metric the optuna strategy minimises.

    Symmetric in over- and undershoot on a log scale; a relative tolerance ``tol`` is met when
    ``|rate / target - 1| <= tol``. Rates below 1e-6 nats are floored so the value stays finite.
    """
    if not (isinstance(rate, int | float) and math.isfinite(rate)):
        return math.inf
    return abs(math.log(max(float(rate), _MIN_RATE) / float(target)))


def within_tolerance(rate: float, target: float, tolerance: float) -> bool:
    """True when ``|rate / target - 1| <= tolerance`` (relative, e.g. 0.05 = 5 %)."""
    return math.isfinite(rate) and abs(rate / target - 1.0) <= tolerance + 1e-12


def cell_label(params: Mapping[str, Any]) -> str:
    """``"loss.lambda_neural=0.5,loss.neural=box_blur"`` (sorted keys), or ``"base"`` when empty:
    a task's cell, as the ``cell`` column of the operating points names it."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params)) or "base"


def get_dotted(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    """Read ``dotted`` from a config in either Tune convention: flat dotted keys or nested."""
    if dotted in config:
        return config[dotted]
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def split_trial_config(config: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Split a Tune trial config into (the trial's own keys, the matched-rate metadata or None)."""
    rest = {k: v for k, v in config.items() if k != META_KEY}
    meta = config.get(META_KEY)
    return rest, (dict(meta) if isinstance(meta, Mapping) else None)


def matched_rate_report(
    report: Callable[..., None], target: float, cfg: Any = None, total_steps: int | None = None,
) -> Callable[[dict[str, float], Any], None]:
    """Wrap the training loop's ``report(metrics, checkpoint_dir)`` so each result also carries
    ``rate_error`` (vs ``target`` nats) and ``progress`` (``step / total_steps``, 1.0 at the end).

    Pass ``total_steps`` (the run's planned optimiser steps) or the trial's ``TrialConfig`` as
    ``cfg``: then the planned length is worked out at the first report from its ``step`` and
    ``epoch`` (they give the steps per epoch) exactly as ``raysweep.train.loop.total_steps`` does.
    With neither, ``progress`` is left out unless the metrics already carry it.
    """
    planned: list[int] = [total_steps] if total_steps else []

    def wrapped(metrics: dict[str, float], checkpoint: Any = None) -> None:
        metrics = dict(metrics)
        metrics[RATE_ERROR] = rate_error(metrics.get("rate", math.nan), target)
        if not planned and cfg is not None and metrics.get("epoch", 0) > 0 and "step" in metrics:
            from raysweep.train.loop import total_steps as loop_total_steps

            steps_per_epoch = max(1, round(float(metrics["step"]) / float(metrics["epoch"])))
            planned.append(loop_total_steps(cfg, steps_per_epoch * cfg.train.batch_size))
        if planned and "step" in metrics:
            metrics[PROGRESS] = min(1.0, float(metrics["step"]) / planned[0])
        report(metrics, checkpoint)

    return wrapped


# ------------------------------------------------------------------------------------ records
@dataclass
class TrialRecord:
    """What one finished (or stopped, or failed) matched-rate trial contributes to its task."""

    trial_id: str
    cell: str
    target: float  # nats
    strategy: str
    beta: float  # the proposed KL weight (GECO: its initial value)
    final_beta: float  # the reported beta at the end (GECO's controlled value)
    rate: float  # nats, last reported
    distortion_sse: float  # per image, last reported
    anisotropy: float  # mean Var_j(logvar_j), last reported
    epochs: float  # passes over the training set this trial ran
    converged: bool  # ran its whole planned length (progress >= 1)
    error: bool = False
    cell_params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # train.seed of a sweep with search.seeds

    @property
    def task(self) -> tuple[str, float, int | None]:
        return (self.cell, self.target, self.seed)


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def record_from_result(trial_id: str, config: Mapping[str, Any], metrics: Mapping[str, Any] | None,
                       error: bool = False) -> TrialRecord | None:
    """Build a :class:`TrialRecord` from a trial's config and last result (None: not matched-rate)."""
    _, meta = split_trial_config(config)
    if meta is None:
        return None
    metrics = metrics or {}
    beta = _num(get_dotted(config, BETA_KEY, math.nan))
    progress = metrics.get(PROGRESS, 1.0 if metrics else 0.0)
    return TrialRecord(
        trial_id=str(trial_id), cell=str(meta["cell"]), target=float(meta["target"]),
        strategy=str(meta.get("strategy", "")), beta=beta,
        final_beta=_num(metrics.get("beta", beta)), rate=_num(metrics.get("rate")),
        distortion_sse=_num(metrics.get("distortion_sse", metrics.get("distortion"))),
        anisotropy=_num(metrics.get("anisotropy")), epochs=_num(metrics.get("epoch", 0.0)) if metrics else 0.0,
        converged=bool(metrics) and not error and _num(progress) >= 1.0 - 1e-9,
        error=bool(error), cell_params=dict(meta.get("cell_params", {})),
        seed=None if meta.get("seed") is None else int(meta["seed"]),
    )


def records_from_results(results: Iterable[Any]) -> list[TrialRecord]:
    """Trial records from Tune ``Result`` objects (a ``ResultGrid`` iterates them) or plain dicts
    ``{"trial_id", "config", "metrics", "error"}``. Non-matched-rate trials are skipped."""
    records = []
    for res in results:
        if isinstance(res, Mapping):
            config, metrics = res.get("config", {}), res.get("metrics") or {}
            error, trial_id = bool(res.get("error")), res.get("trial_id", metrics.get("trial_id", ""))
        else:
            config, metrics = res.config or {}, res.metrics or {}
            error, trial_id = res.error is not None, metrics.get("trial_id", "")
        rec = record_from_result(trial_id, config, metrics, error)
        if rec is not None:
            records.append(rec)
    return records


# ----------------------------------------------------------------------------- operating points
@dataclass
class OperatingPoint:
    """One (cell, target, seed): the beta found, what it achieved, and the compute spent finding it.

    ``beta`` is the trial's fixed KL weight (GECO: the controller's final beta); ``rate`` nats;
    ``relative_error = rate / target - 1``; ``distortion_sse`` per image; ``anisotropy`` mean
    Var_j(logvar_j); ``trials`` and ``epochs`` sum over every trial of the task (stopped and
    failed ones included); ``trial_id`` names the chosen trial (None when no trial converged);
    ``seed`` is the task's ``train.seed`` (None for a sweep without ``search.seeds``).
    """

    cell: str
    target_rate: float
    beta: float
    rate: float
    relative_error: float
    within_tolerance: bool
    distortion_sse: float
    anisotropy: float
    trials: int
    epochs: float
    strategy: str
    trial_id: str | None
    cell_params: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None

    @property
    def task(self) -> tuple[str, float, int | None]:
        return (self.cell, self.target_rate, self.seed)

    def row(self) -> dict[str, Any]:
        """Flat row for a CSV or an MLflow table: ``seed`` after ``target_rate``, then the rest;
        cell params become their own dotted columns."""
        fields = {k: v for k, v in asdict(self).items() if k not in ("cell_params", "seed")}
        row = {"cell": fields.pop("cell"), "target_rate": fields.pop("target_rate"), "seed": self.seed, **fields}
        row.update(self.cell_params)
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> OperatingPoint:
        """The point a :meth:`row` (e.g. of ``operating_points.json``, null as NaN) describes."""
        names = {f for f in cls.__dataclass_fields__ if f != "cell_params"}
        num = {"beta", "rate", "relative_error", "distortion_sse", "anisotropy", "epochs"}
        values = {k: (math.nan if v is None and k in num else v) for k, v in row.items() if k in names}
        values.setdefault("seed", None)
        return cls(**values, cell_params={k: v for k, v in row.items() if k not in names})


def derive_operating_points(results: Iterable[Any], tolerance: float = 0.05) -> list[OperatingPoint]:
    """One :class:`OperatingPoint` per (cell, target, seed) found in ``results``.

    ``results``: a Tune ``ResultGrid``, a list of ``Result``, plain dicts (see
    :func:`records_from_results`) or :class:`TrialRecord` objects (e.g. a searcher's ledger).
    The chosen trial is the converged one with the smallest ``|log(rate / target)|``; ``tolerance``
    (relative) only sets ``within_tolerance``. Ordered by cell, then target, then seed.
    """
    items = list(results)
    records = [r for r in items if isinstance(r, TrialRecord)]
    records += records_from_results(r for r in items if not isinstance(r, TrialRecord))
    tasks: dict[tuple[str, float, int | None], list[TrialRecord]] = {}
    for rec in records:
        tasks.setdefault(rec.task, []).append(rec)
    points = []
    for (cell, target, seed), recs in sorted(tasks.items(), key=lambda kv: task_order(kv[0])):
        done = [r for r in recs if r.converged and math.isfinite(r.rate)]
        best = min(done, key=lambda r: rate_error(r.rate, target)) if done else None
        epochs = float(sum(r.epochs for r in recs if math.isfinite(r.epochs)))
        strategy = recs[0].strategy
        steers = strategy in MATCHED_RATE_STRATEGIES and MATCHED_RATE_STRATEGIES[strategy].steers
        beta = math.nan if best is None else (best.final_beta if steers else best.beta)
        rate = math.nan if best is None else best.rate
        points.append(OperatingPoint(
            cell=cell, target_rate=target, beta=beta, rate=rate,
            relative_error=rate / target - 1.0 if best else math.nan,
            within_tolerance=best is not None and within_tolerance(rate, target, tolerance),
            distortion_sse=best.distortion_sse if best else math.nan,
            anisotropy=best.anisotropy if best else math.nan,
            trials=len(recs), epochs=epochs, strategy=strategy,
            trial_id=best.trial_id if best else None, cell_params=dict(recs[0].cell_params), seed=seed,
        ))
    return points


def task_order(task: tuple[str, float, int | None]) -> tuple[str, float, bool, int]:
    """Sort key of a (cell, target, seed) task: a seed of None sorts first."""
    cell, target, seed = task
    return (cell, target, seed is not None, seed or 0)


def merge_operating_points(earlier: Iterable[OperatingPoint], later: Iterable[OperatingPoint]) -> list[OperatingPoint]:
    """``earlier`` points with ``later`` ones added (a later point of the same task replaces it),
    in :func:`task_order`: how ``raysweep extend`` joins the points of the seeds it adds."""
    merged = {p.task: p for p in earlier}
    merged.update({p.task: p for p in later})
    return [merged[t] for t in sorted(merged, key=task_order)]


def operating_points_table(points: Iterable[OperatingPoint]) -> list[dict[str, Any]]:
    """Rows (one per point) with the same columns in every row; missing cell keys are None."""
    rows = [p.row() for p in points]
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    return [{c: row.get(c) for c in columns} for row in rows]


def _json_safe(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_operating_points(points: Iterable[OperatingPoint], out_dir: str | Path) -> dict[str, Path]:
    """Write :data:`~raysweep.names.OPERATING_POINTS_CSV` and :data:`~raysweep.names.OPERATING_POINTS_JSON`
    (``operating_points.{csv,json}``, NaN as null) under ``out_dir``.

    Returns ``{"csv": path, "json": path}``, ready for ``mlflow.log_artifact``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = operating_points_table(points)
    csv_path, json_path = out / OPERATING_POINTS_CSV, out / OPERATING_POINTS_JSON
    with open(csv_path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["cell", "target_rate"])
        writer.writeheader()
        writer.writerows(rows)
    safe = [{k: _json_safe(v) for k, v in row.items()} for row in rows]
    json_path.write_text(json.dumps(safe, indent=2) + "\n")
    return {"csv": csv_path, "json": json_path}


def read_operating_points(text: str | None) -> list[OperatingPoint]:
    """The points of an ``operating_points.json`` text (as :func:`write_operating_points` writes
    it); none for None (no file)."""
    return [OperatingPoint.from_row(row) for row in json.loads(text)] if text else []
