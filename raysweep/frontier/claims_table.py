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
from raysweep.frontier.claims import (
    ANISOTROPY_VS_LAMBDA,
    FRONTIER_SHIFT,
    RATE_VS_LAMBDA,
    ClaimRow,
)

CLAIM_LABELS = {RATE_VS_LAMBDA: "rate vs lambda", FRONTIER_SHIFT: "frontier shift",
                ANISOTROPY_VS_LAMBDA: "anisotropy vs lambda"}
#: The short name of each method in the table (the full one is in the footer, the JSON and the CSV).
METHOD_LABELS = {S.BLOCKED_METHOD: "blocked", S.POOLED_METHOD: "pooled", S.PAIRED_METHOD: "paired"}


def _clean(value: object) -> object:
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def claims_records(rows: Sequence[ClaimRow]) -> list[dict]:
    """The rows as plain dicts, missing or non-finite numbers as None (JSON null)."""
    return [{k: _clean(v) for k, v in vars(row).items()} for row in rows]


def claims_frame(rows: Sequence[ClaimRow]) -> pd.DataFrame:
    """The rows as a DataFrame, one column per :class:`ClaimRow` field."""
    columns = list(ClaimRow.__dataclass_fields__)
    return pd.DataFrame(claims_records(rows), columns=columns)


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
    if row.claim == RATE_VS_LAMBDA:
        return f"beta={row.beta:g}"
    if row.claim == FRONTIER_SHIFT:
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
    """Blocked slopes: the seeds a one-seed-per-run design would need for the same width ('>100' past
    the projection's limit); '' for other rows."""
    if row.method != S.BLOCKED_METHOD:
        return ""
    return f">{S.MAX_PROJECTED_SEEDS}" if row.pooled_seeds is None else str(row.pooled_seeds)


TEXT_COLUMNS = ("claim", "group", "at", "slope / shift", "interval", "level", "verdict", "margin", "method", "icc",
                "n", "seeds", "pooled seeds", "left out", "reason")


def text_cells(row: ClaimRow) -> list[str]:
    """One row's cells under :data:`TEXT_COLUMNS` (``left out``: off-target runs of claim 2, seeds
    without enough overlap of the shift)."""
    left_out = str(row.excluded) if row.claim != RATE_VS_LAMBDA else ""
    margin = "" if row.margin is None else f"±{row.margin:g}"
    return [CLAIM_LABELS[row.claim], row.group, where(row), number(row.slope), interval(row), level_text(row),
            row.verdict, margin, METHOD_LABELS.get(row.method, row.method), icc_text(row), str(row.n),
            str(row.n_seeds), pooled_seeds_text(row), left_out, row.reason]


def methods_note(rows: Sequence[ClaimRow]) -> str:
    """What the intervals and verdicts are: the methods the rows used and the looks' level."""
    used = [m for m in (S.BLOCKED_METHOD, S.POOLED_METHOD, S.PAIRED_METHOD) if any(r.method == m for r in rows)]
    looks = max((r.looks for r in rows), default=1)
    level = 100 * (1 - S.alpha_per_look(looks))
    spend = (f"{looks} planned looks, alpha 0.05 spent evenly (Bonferroni): each look at {level:.3g}%"
             if looks > 1 else "one look")
    return ("methods: " + "; ".join(f"{METHOD_LABELS[m]} = {m}" for m in used) + ". "
            f"Verdicts: falls/rises (shifts down/up) when the {level:.3g}% interval excludes 0; negligible when the "
            f"{100 - 2 * (100 - level):.3g}% interval lies inside ±margin (two one-sided tests); else undecided ({spend}). "
            "icc: share of the residual variance the seeds held; pooled seeds: the seeds a design giving every run "
            "its own seed is projected to need for an interval as narrow (what blocking bought).")


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
