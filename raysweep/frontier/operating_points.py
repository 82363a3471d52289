"""Matched-rate operating points in the frontier report.

A ``search.mode: matched_rate`` sweep logs its operating points (one row per cell, rate target and
seed (``search.seeds``; GECO's per-seed runs too):
the beta found, the rate achieved, distortion, anisotropy and the compute spent) as
``operating_points/operating_points.json`` on its MLflow parent run
(:mod:`raysweep.tracking.operating_points`; both names come from :mod:`raysweep.names`). When a
parent run of the experiment has it, the report gets an "Operating points" section: anisotropy
against lambda, one marker series per target rate; the beta found against lambda, likewise; and a
table of the points.
"""

from __future__ import annotations

import html
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from raysweep.frontier.collect import no_progress_bars  # noqa: E402
from raysweep.frontier.plots import DPI, FIGSIZE, LAMBDA_LABEL, Figure  # noqa: E402
from raysweep.names import OPERATING_POINTS_ARTIFACT_DIR, OPERATING_POINTS_JSON  # noqa: E402
from raysweep.tracking.store import make_client, ui_run_url  # noqa: E402

ARTIFACT = f"{OPERATING_POINTS_ARTIFACT_DIR}/{OPERATING_POINTS_JSON}"
LAMBDA_COLUMN = "loss.lambda_neural"
SECTION_ID = "operating-points"

#: Table columns: (header, column, number format or None for text).
TABLE: list[tuple[str, str, str | None]] = [
    ("cell", "cell", None), ("λ", "lambda_neural", "{:g}"), ("R* (nats)", "target_rate", "{:g}"),
    ("seed", "seed", "{:.0f}"),
    ("β found", "beta", "{:.4g}"), ("rate (nats)", "rate", "{:.4g}"), ("within tolerance", "within_tolerance", None),
    ("distortion (SSE / image)", "distortion_sse", "{:.4g}"), ("anisotropy", "anisotropy", "{:.4g}"),
    ("trials", "trials", "{:.0f}"), ("epochs", "epochs", "{:.3g}"), ("strategy", "strategy", None),
]


def load_operating_points(tracking_uri: str, parent_run_ids: list[str], runs: pd.DataFrame) -> pd.DataFrame:
    """The operating points logged on any of `parent_run_ids` (empty frame when none has them),
    with ``lambda_neural`` (from the cell, else from the chosen trial's run) and ``run_id`` (the
    chosen trial's MLflow run, when found in `runs`)."""
    client = make_client(tracking_uri)
    frames = []
    with tempfile.TemporaryDirectory(prefix="raysweep_points_") as tmp, no_progress_bars():
        for parent in parent_run_ids:
            names = {f.path for f in client.list_artifacts(parent, OPERATING_POINTS_ARTIFACT_DIR)}
            if ARTIFACT not in names:
                continue
            local = client.download_artifacts(parent, ARTIFACT, str(Path(tmp) / parent))
            rows = json.loads(Path(local).read_text())
            if rows:
                frames.append(pd.DataFrame(rows).assign(sweep_run_id=parent))
    if not frames:
        return pd.DataFrame()
    points = pd.concat(frames, ignore_index=True)
    by_trial = runs.dropna(subset=["trial_id"]).drop_duplicates("trial_id").set_index("trial_id")
    chosen = points["trial_id"].map(lambda t: t if t in by_trial.index else None)
    points["run_id"] = chosen.map(lambda t: by_trial.at[t, "run_id"] if t else None)
    from_run = chosen.map(lambda t: by_trial.at[t, "lambda_neural"] if t else np.nan)
    own = points[LAMBDA_COLUMN] if LAMBDA_COLUMN in points else pd.Series(np.nan, index=points.index)
    points["lambda_neural"] = pd.to_numeric(own, errors="coerce").fillna(pd.to_numeric(from_run, errors="coerce"))
    if "seed" not in points:  # a sweep without search.seeds, or logged before points had seeds
        points["seed"] = np.nan
    for column in ("target_rate", "seed", "beta", "rate", "distortion_sse", "anisotropy", "trials", "epochs"):
        points[column] = pd.to_numeric(points[column], errors="coerce")
    return points.sort_values(["target_rate", "lambda_neural", "cell", "seed"]).reset_index(drop=True)


def _plot_against_lambda(points: pd.DataFrame, value: str, ylabel: str, title: str, path: Path,
                         log: bool = False) -> str:
    """One marker series per target rate of `value` against lambda; '' when drawn, else why not."""
    finite = points[np.isfinite(points["lambda_neural"].to_numpy(dtype=float))
                    & np.isfinite(points[value].to_numpy(dtype=float))]
    if finite.empty:
        return f"no operating point with a finite {value} and lambda"
    fig, ax = plt.subplots(figsize=FIGSIZE)
    cmap = plt.get_cmap("cividis")
    targets = sorted(finite["target_rate"].unique())
    for i, target in enumerate(targets):
        at = finite[finite["target_rate"] == target].sort_values("lambda_neural")
        ax.plot(at["lambda_neural"], at[value], "o", markersize=7, color=cmap(0.85 * i / max(1, len(targets) - 1)),
                label=f"R*={target:g} nats ({len(at)} point{'s' * (len(at) != 1)})")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel(LAMBDA_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return ""


def draw_operating_points(points: pd.DataFrame, folder: Path) -> list[Figure]:
    """The two operating-point figures, ``folder/operating_points_{anisotropy,beta}.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    makers = [
        ("anisotropy", "Anisotropy against lambda at each target rate", "mean anisotropy  Var_j(log σ²_j)", False),
        ("beta", "Beta found against lambda at each target rate", "β found (KL weight)", True),
    ]
    figures = []
    for value, caption, ylabel, log in makers:
        name = f"operating_points_{value}.png"
        note = _plot_against_lambda(points, value, ylabel, f"operating points: {caption.lower()}", folder / name, log)
        figures.append(Figure(value, caption, None if note else name, note))
    return figures


def format_cell(value: object, fmt: str | None) -> str:
    """One HTML table cell's text: blank for missing values, yes/no for booleans, `fmt` for numbers."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if fmt is None:
        return html.escape(str(value))
    try:
        return fmt.format(float(value))
    except (TypeError, ValueError):
        return html.escape(str(value))


def load_cell(run_id: object) -> str:
    """A table cell with the Python line that loads the run's trained model (``raysweep.load_run``);
    empty when there is no run."""
    if not isinstance(run_id, str) or not run_id:
        return "<td></td>"
    call = html.escape(f'raysweep.load_run("{run_id}")')
    return f'<td class="load"><code>{call}</code></td>'


def operating_points_html(points: pd.DataFrame, figures_html: str, experiment_id: str, ui_url: str) -> str:
    """The report's "Operating points" section: the figures and one table row per point (the
    target links to the chosen trial's MLflow run)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in TABLE) + "<th>load</th>"
    rows = []
    for _, row in points.iterrows():
        cells = []
        for header, column, fmt in TABLE:
            text = format_cell(row.get(column), fmt)
            if header.startswith("R*") and isinstance(row.get("run_id"), str):
                link = html.escape(ui_run_url(ui_url, experiment_id, row["run_id"]))
                text = f'<a href="{link}">{text}</a>'
            cells.append(f"<td>{text}</td>")
        cells.append(load_cell(row.get("run_id")))
        rows.append('      <tr class="operating-point">' + "".join(cells) + "</tr>")
    body = "\n".join(rows)
    return (f'<section id="{SECTION_ID}">\n<h2>Operating points (matched rate)</h2>\n'
            f'<p class="meta">Per cell, target rate R* and seed, the trial whose converged rate is nearest R* '
            f"(search.mode matched_rate): the β found, the rate it reached, its distortion and anisotropy, "
            f"and the compute spent finding it (every trial of the search, and the epochs they trained).</p>\n"
            f'<div class="figures">\n{figures_html}\n</div>\n'
            f'<div class="scroll">\n  <table>\n    <thead><tr>{head}</tr></thead>\n    <tbody>\n{body}\n'
            f"    </tbody>\n  </table>\n</div>\n</section>")
