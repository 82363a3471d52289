"""The claims table in every form a person or a program reads it: JSON (null for missing numbers,
never NaN), ``claims.json`` + ``claims.csv``, an aligned plain-text table (``raysweep claims``) and
markdown (the sweep's MLflow parent run description)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from raysweep.frontier import statistics as S
from raysweep.frontier.claims import NOT_SETTLED, ClaimRow
from raysweep.names import CLAIM_SPECS

CLAIM_LABELS = {name: spec.label for name, spec in CLAIM_SPECS.items()}
#: The short name of each method in the table (the full one is in the footer, the JSON and the CSV).
METHOD_LABELS = {S.TWO_STAGE_METHOD: "two-stage", S.POOLED_METHOD: "pooled", S.PAIRED_METHOD: "paired"}
#: The JSON / CSV columns, in order: where the row is taken, its numbers, its verdict and whether it
#: had settled, its diagnostics, and why.
RECORD_COLUMNS = ("claim", "group", "dataset", "model", "loss", "pixel_loss", "condition", "beta", "lambda_neural",
                  "target_rate", "slope", "se", "df", "ci_low", "ci_high", "eq_low", "eq_high", "margin", "level",
                  "looks", "alpha_bound", "verdict", "settled", "settling", "verdict_at_check", "check_step", "last_step", "n",
                  "n_seeds", "seeds_left_out", "seeds_needed", "icc", "interaction_p", "seed_slope_sd", "blocked_se",
                  "pooled_seeds", "excluded", "tolerance", "reason", "method")


def _clean(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def settling_text(row: ClaimRow) -> str:
    """``settled``, ``not settled: train longer (falls at step 400 of 600)`` or '' (one validation)."""
    if row.settled is None:
        return ""
    if row.settled:
        return "settled"
    return f"{NOT_SETTLED} ({row.verdict_at_check} at step {row.check_step:g} of {row.last_step:g})"


def row_record(row: ClaimRow) -> dict:
    """One row flattened into :data:`RECORD_COLUMNS` (the one place the estimate, the decision and
    the verdict become columns): plain values, missing or non-finite numbers as None."""
    estimate = row.estimate
    record = {
        "claim": row.claim, "group": row.group, "dataset": row.dataset, "model": row.model, "loss": row.loss,
        "pixel_loss": row.pixel_loss, "condition": row.condition, "beta": row.beta,
        "lambda_neural": row.lambda_neural, "target_rate": row.target_rate, "slope": row.slope, "se": row.se,
        "df": row.df, "ci_low": row.ci_low, "ci_high": row.ci_high, "eq_low": row.eq_low, "eq_high": row.eq_high,
        "margin": row.margin, "level": row.level, "looks": row.looks, "alpha_bound": row.alpha_bound, "verdict": str(row.verdict),
        "settled": row.settled, "settling": settling_text(row), "verdict_at_check": row.verdict_at_check,
        "check_step": row.check_step, "last_step": row.last_step, "n": row.n, "n_seeds": row.n_seeds,
        "seeds_left_out": row.seeds_left_out, "seeds_needed": row.seeds_needed, "icc": row.icc,
        "interaction_p": row.interaction_p, "seed_slope_sd": row.seed_slope_sd,
        "blocked_se": None if estimate is None else estimate.blocked_se, "pooled_seeds": row.pooled_seeds,
        "excluded": row.excluded, "tolerance": row.tolerance, "reason": row.reason, "method": row.method,
    }
    return {k: _clean(record[k]) for k in RECORD_COLUMNS}


def claims_records(rows: Sequence[ClaimRow]) -> list[dict]:
    """The rows as plain dicts (:func:`row_record`), missing or non-finite numbers as None (JSON null)."""
    return [row_record(row) for row in rows]


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    """The rows as a DataFrame, one column per :data:`RECORD_COLUMNS` entry."""
    return pd.DataFrame(claims_records(rows), columns=list(RECORD_COLUMNS))


def claims_json(rows: Sequence[ClaimRow]) -> str:
    """The rows as a JSON list (missing numbers null; NaN never appears)."""
    return json.dumps(claims_records(rows), indent=2, allow_nan=False)


def write_claims(rows: Sequence[ClaimRow], out_dir: str | Path) -> dict[str, Path]:
    """Write ``claims.json`` and ``claims.csv`` (missing numbers empty) into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "claims.json", "csv": out / "claims.csv"}
    paths["json"].write_text(claims_json(rows) + "\n")
    claims_frame(rows).to_csv(paths["csv"], index=False)
    return paths


def where(row: ClaimRow) -> str:
    """Where a row is taken: ``beta=0.5`` (claim 1), ``lambda=0.5`` (shift) or ``R*=10 nats ±0.05``
    (claim 2, with its relative rate tolerance)."""
    at = CLAIM_SPECS[row.claim].at
    if at == "beta":
        return f"beta={row.beta:g}"
    if at == "lambda_neural":
        return f"lambda={row.lambda_neural:g}"
    tolerance = f" ±{row.tolerance:.3g}" if row.tolerance is not None else ""
    return f"R*={row.target_rate:g} nats{tolerance}"


def number(value: float | None) -> str:
    """A slope, shift or bound in 4 significant digits; '' when missing."""
    return "" if value is None or not math.isfinite(value) else f"{value:.4g}"


def interval(row: ClaimRow) -> str:
    """``[low, high]``, or '' when the row has no interval."""
    if row.ci_low is None or row.ci_high is None:
        return ""
    return f"[{number(row.ci_low)}, {number(row.ci_high)}]"


def level_text(row: ClaimRow) -> str:
    """The interval's level, ``95%`` (or ``99%`` at each of 5 planned looks); '' without one."""
    return "" if row.level is None or row.ci_low is None else f"{100 * row.level:.3g}%"


def icc_text(row: ClaimRow) -> str:
    return "" if row.icc is None else f"{row.icc:.2f}"


def pooled_seeds_text(row: ClaimRow) -> str:
    """Two-stage slopes: the seeds a one-seed-per-run design would need for the same width ('>100'
    past the projection's limit); '' for other rows."""
    if row.method != S.TWO_STAGE_METHOD or row.decision is None:
        return ""
    return f">{S.MAX_PROJECTED_SEEDS}" if row.pooled_seeds is None else str(row.pooled_seeds)


TEXT_COLUMNS = ("claim", "group", "at", "slope / shift", "interval", "level", "verdict", "settled", "margin", "method",
                "icc", "seed sd", "n", "seeds", "pooled seeds", "left out", "reason")


def text_cells(row: ClaimRow) -> list[str]:
    """One row's cells under :data:`TEXT_COLUMNS` (``left out``: off-target runs of claim 2, seeds
    without enough overlap of the shift; empty when none)."""
    left_out = str(row.excluded) if row.excluded else ""
    margin = "" if row.margin is None else f"±{row.margin:g}"
    seed_sd = "" if row.seed_slope_sd is None else f"{row.seed_slope_sd:.3g}"
    return [CLAIM_SPECS[row.claim].label, row.group, where(row), number(row.slope), interval(row), level_text(row),
            str(row.verdict), settling_text(row), margin, METHOD_LABELS.get(row.method, row.method), icc_text(row),
            seed_sd, str(row.n), str(row.n_seeds), pooled_seeds_text(row), left_out, row.reason]


def methods_note(rows: Sequence[ClaimRow]) -> str:
    """What the intervals and verdicts are: the methods the rows used, the level of this read and
    the bound on the false-verdict rate over every look of the sweep."""
    used = [m for m in (S.TWO_STAGE_METHOD, S.POOLED_METHOD, S.PAIRED_METHOD) if any(r.method == m for r in rows)]
    levels = [r.level for r in rows if r.level is not None]
    level = 100 * (min(levels) if levels else 1 - S.ALPHA)
    looks = max((r.looks for r in rows), default=1)
    spend = "one look"
    if looks > 1:
        bound = max(r.alpha_bound for r in rows)
        spend = (f"{looks} looks of raysweep extend --until-decided, alpha spent over them (Bonferroni): this read "
                 f"at {level:.3g}%, the false-verdict rate over every look at most {100 * bound:.3g}%")
    return ("methods: " + "; ".join(f"{METHOD_LABELS[m]} = {m}" for m in used) + ". "
            f"Verdicts: falls/rises (shifts down/up) when the {level:.3g}% interval excludes 0; negligible when the "
            f"{100 - 2 * (100 - level):.3g}% interval lies inside ±margin (two one-sided tests); else undecided ({spend}). "
            "Intervals are over seeds: they hold for the method, not only for the seeds that ran. settled: the verdict "
            "at the last validation equals the one at the validation nearest 75% of training. icc: share of the "
            "residual variance the seeds held; seed sd: the sd of the seeds' own slopes net of noise (the seed x "
            "lambda interaction); pooled seeds: the seeds a design giving every run its own seed is projected to "
            "need for an interval as narrow (what sharing seeds bought).")


def format_claims(rows: Sequence[ClaimRow]) -> str:
    """The rows as a plain-text table with aligned columns, and what the units and intervals are."""
    if not rows:
        return "no claims: the experiment has no finished runs"
    table = [list(TEXT_COLUMNS)] + [text_cells(r) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(TEXT_COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += ["", "slope: rate vs lambda in nats per unit lambda (fixed beta), anisotropy vs lambda per unit lambda "
              "(runs within the rate tolerance of R*);",
              "frontier shift: mean rate difference in nats to the same seed's lambda = 0 curve at equal per-pixel MSE "
              "(PCHIP of rate on log MSE, common range);",
              methods_note(rows)]
    return "\n".join(lines)


def claims_markdown(rows: Sequence[ClaimRow]) -> str:
    """The rows as a markdown table (the columns of :func:`format_claims`) and the methods, for the
    sweep's MLflow parent run description (``mlflow.note.content``); pipes inside cells are escaped."""
    if not rows:
        return "No claims: the experiment has no finished runs."

    def cells(line: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |"

    lines = ["### Claims", "", cells(TEXT_COLUMNS), "|" + "---|" * len(TEXT_COLUMNS)]
    lines += [cells(text_cells(r)) for r in rows]
    lines += ["", methods_note(rows)]
    return "\n".join(lines)
