"""The end of a sweep: its outcome (one row per trial, and where everything is) and the text the
``sweep`` / ``resume`` commands print. :func:`format_table` is the one plain-text table of the
package: the trials' table and the operating points' table both use it.

A trial's status is ``finished``, ``diverged``, ``stopped`` (by ASHA or a stopper, before its last
step), ``error`` or ``interrupted`` (the sweep stopped before the trial ended: ``resume``
continues it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep import storage
from raysweep.names import (
    ANISOTROPY,
    DISTORTION_SSE,
    FINAL_SUMMARY,
    KEY_METRICS,
    METRICS_LOG,
    OPERATING_POINTS_CSV,
    STEP,
)
from raysweep.tune.space import ExpandedSweep

if TYPE_CHECKING:
    from raysweep.tune.matched_rate.points import OperatingPoint
    from raysweep.tune.sweep_config import SweepConfig

SUMMARY_COLUMNS = (STEP, *KEY_METRICS)


@dataclass
class SweepOutcome:
    """What a finished (or resumed) sweep reports: one row per trial, and where things are."""

    sweep_dir: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    varying_keys: list[str] = field(default_factory=list)
    num_trials_expected: int = 0
    operating_points: list[OperatingPoint] = field(default_factory=list)  # matched-rate sweeps only
    operating_points_dir: str | None = None

    @property
    def num_errors(self) -> int:
        return sum(1 for row in self.rows if row["status"] == "error")

    @property
    def complete(self) -> bool:
        """True when every trial ended (none errored or was interrupted) and none is missing."""
        return self.num_trials_expected <= len(self.rows) and not any(
            row["status"] in ("error", "interrupted") for row in self.rows
        )


# ---------------------------------------------------------------------------- outcome
def _saved_statuses(sweep_dir: str) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state (what ``resume`` acts on:
    TERMINATED and ERROR trials have ended, the others will run again); {} when unreadable."""
    if storage.is_uri(sweep_dir):
        return {}
    try:
        # The newest by name (its timestamp), as Tune picks it: syncing touches older files too.
        newest = max(storage.local_path(sweep_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
        state = json.loads(newest.read_text())
        trials = [json.loads(data) for data, _ in state["trial_data"]]
        return {str(t["trial_id"]): str(t["status"]) for t in trials}
    except (ValueError, OSError, KeyError, TypeError):  # no state yet, or a format this code does not know
        return {}


def _status(result: Any, outputs: Path, tune_status: str | None) -> str:
    """finished, diverged, stopped, error or interrupted (see the module docstring)."""
    metrics, config = result.metrics or {}, result.config or {}
    if result.error is not None:
        return "error"
    if tune_status is not None and tune_status not in ("TERMINATED", "ERROR"):
        return "interrupted"
    if metrics.get("diverged") == 1:
        return "diverged"
    final = outputs / FINAL_SUMMARY
    if final.is_file():  # the loop wrote its final summary: it ran to its end
        return str(json.loads(final.read_text()).get("status", "finished"))
    if outputs.parent.exists():  # outputs are in the sweep directory, but no final summary
        return "stopped"
    steps, step = config.get("train.max_steps"), metrics.get(STEP)
    return "stopped" if steps is not None and step is not None and step < steps else "finished"


def summarize(results: Any, sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str) -> SweepOutcome:
    """One row per trial of a Tune ``ResultGrid``: id, varying params, status, last step and
    headline metrics (:data:`SUMMARY_COLUMNS`), validations, output folder."""
    keys = expanded.varying_keys + [k for k in expanded.distributions if k not in expanded.varying_keys]
    outcome = SweepOutcome(sweep_dir=sweep_dir, varying_keys=keys, num_trials_expected=expanded.num_trials)
    statuses = _saved_statuses(sweep_dir)
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        outputs = storage.trial_output_dir(sweep_dir, sweep.name, trial_id)
        row: dict[str, Any] = {"trial": trial_id, "status": _status(result, outputs, statuses.get(str(trial_id)))}
        row.update({k: config.get(k) for k in keys})
        row.update({k: metrics.get(k) for k in SUMMARY_COLUMNS})
        row["iterations"] = metrics.get("training_iteration")
        row["outputs"] = str(outputs)
        outcome.rows.append(row)
    outcome.rows.sort(key=lambda r: (config_sort_key(r, keys), r["trial"]))
    return outcome


def config_sort_key(row: dict[str, Any], keys: list[str]) -> tuple[str, ...]:
    """Rows ordered by their varying keys (as text, so mixed types compare)."""
    return tuple(repr(row.get(k)) for k in keys)


# ----------------------------------------------------------------------------- tables
def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None as ``-``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A plain-text table as lines: a header line, then one line per row; every cell through
    :func:`fmt`, columns left-aligned to their widest cell, two spaces apart."""
    table = [[fmt(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in table)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return lines


def format_operating_points(points: Sequence[OperatingPoint]) -> list[str]:
    """The operating points as table lines: cell, target, beta found, rate, distortion, anisotropy,
    trials, epochs, and whether the rate is within tolerance."""
    headers = ["cell", "target", "beta", "rate", DISTORTION_SSE, ANISOTROPY, "trials", "epochs", "matched"]
    rows = [[p.cell, p.target_rate, p.beta, p.rate, p.distortion_sse, p.anisotropy, p.trials, p.epochs,
             "yes" if p.within_tolerance else "no"] for p in points]
    if any(p.seed is not None for p in points):  # search.seeds: one point per seed, say which
        headers.insert(2, "seed")
        for row, p in zip(rows, points, strict=True):
            row.insert(2, "" if p.seed is None else p.seed)
    return [f"operating points ({len(points)}; rate in nats):", *format_table(headers, rows)]


#: Most trials the end-of-sweep table lists in full; a larger sweep's lists only the trials that did not
#: finish (each finished trial's metrics are on its "ended" line, in the report and in MLflow).
OUTCOME_ROWS = 12


def format_outcome(outcome: SweepOutcome, optuna_url: str | None = None) -> str:
    """The end-of-sweep table and where to find everything."""
    headers = ["trial", *outcome.varying_keys, "status", *SUMMARY_COLUMNS]
    rows = outcome.rows
    if len(rows) > OUTCOME_ROWS:
        rows = [row for row in rows if row["status"] != "finished"]
    lines = format_table(headers, [[row.get(h) for h in headers] for row in rows]) if rows else []
    counts: dict[str, int] = {}
    for row in outcome.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    if lines:
        lines.append("")
    lines.append(f"{len(outcome.rows)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                 + (" (the finished trials' metrics: their `ended` lines above, the report, MLflow)"
                    if len(rows) < len(outcome.rows) else ""))
    lines.append(f"sweep directory: {outcome.sweep_dir}  (per trial: <trial>/train/ holds {METRICS_LOG}, {FINAL_SUMMARY}, plots)")
    if outcome.operating_points_dir is not None:
        lines.extend(["", *format_operating_points(outcome.operating_points)])
        lines.append(f"operating points: {outcome.operating_points_dir}/{OPERATING_POINTS_CSV} (and .json; "
                     "also on the sweep's MLflow parent run)")
    if optuna_url:
        lines.append(f"optuna studies: optuna-dashboard {optuna_url}")
    missing = outcome.num_trials_expected - len(outcome.rows)
    if missing > 0:
        lines.append(f"{missing} trials not started yet")
    if not outcome.complete:
        lines.append(f"continue the sweep (errored, interrupted and unstarted trials) with: raysweep resume {outcome.sweep_dir}")
    return "\n".join(lines)
