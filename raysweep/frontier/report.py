"""``raysweep report``: the frontier dashboard of one MLflow experiment as a static HTML page.

``DIR/index.html`` (from the template ``dashboards/report.html`` and ``dashboards/report.css``)
opens with the claims (:mod:`raysweep.frontier.claims`: per group the slope of rate against lambda
at each beta, the frontier shift per lambda, the slope of anisotropy against lambda at each rate
target, each with its 95% interval and verdict; also ``DIR/claims.json`` and ``DIR/claims.csv``),
then shows, per dataset x model x neural loss, the four figures of :mod:`raysweep.frontier.plots`
(``DIR/plots/*.png``, referenced relatively so the page works from file:// with no server), its
reconstruction panel (:mod:`raysweep.frontier.reconstructions`: rows lambda, columns the same
validation images, at each beta) and a table of runs linking to their MLflow pages; for a matched-rate sweep (its parent run holds the
``operating_points/`` artifact) also an "Operating points" section (figures and table, see
:mod:`raysweep.frontier.operating_points`). The report is also logged as artifacts (``report/``)
of each sweep's parent run in the experiment, and the claims as its ``claims.json`` and
``claims.csv`` artifacts.
"""

from __future__ import annotations

import html
import importlib.resources
import shutil
import string
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from raysweep.errors import RaysweepError
from raysweep.frontier.along_training import AlongTraining, claims_along_training
from raysweep.frontier.claims import ClaimRow, compute_claims, settings_from_runs
from raysweep.frontier.claims_table import (
    TEXT_COLUMNS,
    claims_markdown,
    methods_note,
    text_cells,
    write_claims,
)
from raysweep.frontier.collect import Collected, collect_runs, load_variance_profiles, metric_histories
from raysweep.frontier.operating_points import (
    SECTION_ID,
    draw_operating_points,
    format_cell,
    load_cell,
    load_operating_points,
    operating_points_html,
)
from raysweep.frontier.pareto import pareto_mask
from raysweep.frontier.plots import Figure, draw_group, groups, plot_claims_along_training, slug
from raysweep.frontier.reconstructions import reconstruction_panel
from raysweep.frontier.selection import with_operating_points
from raysweep.tracking.store import ROLE_SWEEP, ROLE_TAG, make_client, quote, search_all, ui_run_url

# The templates live in the repository's dashboards/ folder, installed as the package
# raysweep.dashboards (pyproject.toml maps one onto the other, editable installs included).
DASHBOARDS_PACKAGE = "raysweep.dashboards"
TEMPLATE, STYLESHEET = "report.html", "report.css"
DEFAULT_UI_URL = "http://127.0.0.1:5000"
PLOTS = "plots"
CLAIMS_ID = "claims"
CLAIM_FILES = ("claims.json", "claims.csv")
REFRESH_SECONDS = 60  # how often a running sweep's page reloads itself
#: The tag MLflow shows as a run's description, and the longest value it stores.
DESCRIPTION_TAG, MAX_DESCRIPTION = "mlflow.note.content", 8000

#: Table columns: (header, frame column, number format or None for text).
COLUMNS: list[tuple[str, str, str | None]] = [
    ("status", "status", None), ("dataset", "dataset", None), ("model", "model", None), ("loss", "loss", None),
    ("pixel", "pixel_loss", None), ("λ", "lambda_neural", "{:g}"), ("β", "beta", "{:g}"),
    ("R* (nats)", "target_rate", "{:g}"), ("seed", "seed", "{:.0f}"), ("step", "step", "{:.0f}"),
    ("rate (nats)", "rate", "{:.4g}"), ("MSE / pixel", "mse", "{:.4g}"), ("PSNR (dB)", "psnr", "{:.3g}"),
    ("anisotropy", "anisotropy", "{:.4g}"), ("agg. anisotropy", "aggregated_anisotropy", "{:.4g}"),
    ("channel anisotropy", "channel_anisotropy", "{:.4g}"),
    ("active units", "active_units", "{:.0f}"), ("final β", "final_beta", "{:.4g}"),
]


@dataclass
class Group:
    """One dataset x model x neural loss block of the report."""

    title: str
    runs: pd.DataFrame
    figures: list[Figure]
    reconstructions: str = ""  # the reconstruction panel's HTML (raysweep.frontier.reconstructions)


def _figure_html(figure: Figure) -> str:
    caption = f"({figure.kind}) {html.escape(figure.title)}"
    if figure.file is None:
        return (f'<figure><div class="empty">{html.escape(figure.note)}</div>'
                f"<figcaption>{caption}</figcaption></figure>")
    src = f"{PLOTS}/{figure.file}"
    return (f'<figure><a href="{src}"><img src="{src}" alt="{caption}"></a>'
            f"<figcaption>{caption}</figcaption></figure>")


def _group_html(group: Group) -> str:
    counts = group.runs["status"].value_counts().to_dict()
    described = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    figures = "\n".join(_figure_html(f) for f in group.figures)
    return (f'<section id="{slug(group.title)}">\n<h2>{html.escape(group.title)}</h2>\n'
            f'<p class="meta">{len(group.runs)} runs ({html.escape(described)}).</p>\n'
            f'<div class="figures">\n{figures}\n</div>\n{group.reconstructions}</section>')


def _row_html(row: pd.Series, experiment_id: str, ui_url: str, on_front: bool) -> str:
    link = ui_run_url(ui_url, experiment_id, row["run_id"])
    name = html.escape(str(row["run_name"] or row["run_id"]))
    star = ' <span class="pareto" title="on the Pareto frontier of its group">★</span>' if on_front else ""
    cells = [f'<td><a href="{html.escape(link)}">{name}</a>{star}</td>']
    withheld = row.get("withheld") if isinstance(row.get("withheld"), dict) else {}
    for header, column, fmt in COLUMNS:
        value = row.get(column)
        css = f' class="status-{html.escape(str(value))}"' if header == "status" else ""
        reason = withheld.get(column)
        if reason is not None:  # left out as unsound: say so, with the reason on hover
            cells.append(f'<td class="withheld" title="{html.escape(reason)}">withheld</td>')
            continue
        cells.append(f"<td{css}>{format_cell(value, fmt)}</td>")
    cells.append(load_cell(row["run_id"]))
    return "      <tr>" + "".join(cells) + "</tr>"


def _pareto_ids(report_groups: list[Group]) -> set[str]:
    ids: set[str] = set()
    for group in report_groups:
        runs = group.runs[group.runs["status"] == "finished"]
        mask = pareto_mask(runs["rate"].to_numpy(dtype=float), runs["mse"].to_numpy(dtype=float))
        ids.update(runs["run_id"][mask])
    return ids


def _verdict_class(verdict: str) -> str:
    return "verdict verdict-" + "-".join(verdict.split())


def claims_html(rows: list[ClaimRow], along: list[Figure] | None = None) -> str:
    """The report's claims section: one table row per group and beta, lambda or rate target, with
    the columns of ``raysweep claims`` (:data:`raysweep.frontier.claims_table.TEXT_COLUMNS`)."""
    verdict_at = TEXT_COLUMNS.index("verdict")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in TEXT_COLUMNS)
    body = []
    for row in rows:
        cells = text_cells(row)
        tds = []
        for i, cell in enumerate(cells):
            if i == verdict_at:
                tds.append(f'<td class="{_verdict_class(row.verdict)}">{html.escape(cell)}</td>')
            elif i == len(cells) - 1:
                tds.append(f'<td class="reason" title="{html.escape(row.method)}">{html.escape(cell)}</td>')
            else:
                tds.append(f"<td>{html.escape(cell)}</td>")
        body.append(f'      <tr class="claim claim-{row.claim}">{"".join(tds)}</tr>')
    table = (f'<div class="scroll">\n  <table class="claims">\n    <thead><tr>{head}</tr></thead>\n    <tbody>\n'
             + "\n".join(body) + "\n    </tbody>\n  </table>\n</div>") if rows else \
        '<p class="empty">No finished runs: nothing to test yet.</p>'
    if along:
        table += ('\n<h3>Claims along training</h3>\n<p class="meta">Each row re-read at every validation from MLflow\'s '
                  "metric history: a verdict that differs between the validation nearest 75% of training and the last "
                  "is <em>not settled: train longer</em>.</p>\n<div class=\"figures\">\n"
                  + "\n".join(_figure_html(f) for f in along) + "\n</div>")
    return (f'<section id="{CLAIMS_ID}">\n<h2>Claims</h2>\n'
            '<p class="meta"><strong>Rate vs lambda</strong>: mean over seeds of each seed\'s slope of the final rate '
            "(nats) against lambda at each fixed β, with a t interval over the seeds' slopes (it holds for the method, "
            "whatever each seed's own slope). One row per condition: runs that differ in any other swept key are "
            "separate rows. "
            "<strong>Frontier shift</strong>: per seed, the mean rate difference (nats) of its λ curve to its own "
            "λ = 0 curve at equal per-pixel MSE over their common range (PCHIP of rate against log MSE, "
            "Bjøntegaard style; negative: the frontier shifts down), then a paired t interval over seeds. "
            "<strong>Anisotropy vs lambda</strong>: mean over seeds of each seed's slope of mean anisotropy against λ at each rate "
            "target R*, only runs within the rate tolerance of R* (off-target runs are counted under "
            f"<em>left out</em>). {html.escape(methods_note(rows))} The method of each row is its reason cell's "
            'tooltip. As a table: <a href="claims.json">claims.json</a>, <a href="claims.csv">claims.csv</a>.</p>\n'
            f"{table}\n</section>")


def _template(name: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(DASHBOARDS_PACKAGE) / name))
    except ModuleNotFoundError:
        path = Path(__file__).resolve().parents[2] / "dashboards" / name  # a source tree on sys.path
    if not path.is_file():
        raise RaysweepError(f"the dashboard template {path} is missing: reinstall raysweep from its repository")
    return path


def progress_banner(runs: pd.DataFrame, total: int) -> str:
    """The banner of a running sweep's page: ``in progress: N of M trials finished`` (M = `total`, 0:
    the search decides how many)."""
    finished = int((runs["status"] == "finished").sum())
    of = f" of {total}" if total > 0 else ""
    return (f'<p class="banner">in progress: {finished}{of} trials finished; the claims and figures below are '
            f"those of the finished trials, and this page is rewritten as trials finish (it reloads itself every "
            f"{REFRESH_SECONDS} s)</p>")


def render(collected: Collected, report_groups: list[Group], out_dir: Path, ui_url: str,
           points: pd.DataFrame | None = None, point_figures: list[Figure] | None = None,
           claims: list[ClaimRow] | None = None, along: list[Figure] | None = None,
           in_progress: int | None = None) -> Path:
    """Write ``out_dir/index.html`` and its stylesheet; returns the page's path. `points` and
    `point_figures`: the matched-rate operating points and their figures, when there are any;
    `claims`: the rows of the claims section at the top; `in_progress`: the trials of a sweep still
    running (0: not known), whose page gets a banner and reloads itself."""
    runs = collected.runs
    front = _pareto_ids(report_groups)
    counts = runs["status"].value_counts().to_dict()
    summary = f"{len(runs)} trial runs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    summary += f"; {len(report_groups)} group{'s' * (len(report_groups) != 1)}."
    if collected.tracking_uri.startswith(("http://", "https://")):
        hint = f"Run names link to the MLflow tracking server at <code>{html.escape(ui_url)}</code>."
    else:
        hint = (f"Run names link to the MLflow UI at <code>{html.escape(ui_url)}</code>: start it with "
                f"<code>raysweep ui --tracking-uri {html.escape(collected.tracking_uri)}</code>.")
    toc = "\n".join(f'    <li><a href="#{slug(g.title)}">{html.escape(g.title)}</a></li>' for g in report_groups)
    section = ""
    if points is not None and not points.empty:
        figures = "\n".join(_figure_html(f) for f in point_figures or [])
        section = operating_points_html(points, figures, collected.experiment_id, ui_url)
        toc += f'\n    <li><a href="#{SECTION_ID}">Operating points</a></li>'

    running = in_progress is not None
    values = {
        "refresh": f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if running else "",
        "banner": progress_banner(runs, in_progress or 0) if running else "",
        "experiment": html.escape(collected.experiment),
        "experiment_id": html.escape(collected.experiment_id),
        "tracking_uri": html.escape(collected.tracking_uri),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "summary": html.escape(summary),
        "ui_hint": hint,
        "toc": toc,
        "claims": claims_html(claims or [], along),
        "groups": "\n".join(_group_html(g) for g in report_groups),
        "operating_points": section,
        "table_head": "<th>run</th>" + "".join(f"<th>{html.escape(h)}</th>" for h, _, _ in COLUMNS) + "<th>load</th>",
        "table_rows": "\n".join(
            _row_html(row, collected.experiment_id, ui_url, row["run_id"] in front) for _, row in runs.iterrows()
        ),
    }
    page = string.Template(_template(TEMPLATE).read_text()).substitute(values)
    shutil.copyfile(_template(STYLESHEET), out_dir / STYLESHEET)
    index = out_dir / "index.html"
    index.write_text(page)
    return index


def describe_parents(tracking_uri: str, parent_run_ids: Sequence[str], rows: Sequence[ClaimRow]) -> None:
    """Set each sweep parent run's MLflow description (its ``mlflow.note.content`` tag, what the
    run page and the runs table show) to the claims table in markdown, cut to MLflow's tag length
    with a pointer to the full ``claims.csv``."""
    text = claims_markdown(rows)
    if len(text) > MAX_DESCRIPTION:
        cut = "\n\n(cut to MLflow's description length: the full table is `raysweep claims` or `claims.csv`)"
        text = text[: MAX_DESCRIPTION - len(cut)].rsplit("\n", 1)[0] + cut
    client = make_client(tracking_uri)
    for run_id in parent_run_ids:
        client.set_tag(run_id, DESCRIPTION_TAG, text)


def describe_experiment(experiment: str, tracking_uri: str, rows: Sequence[ClaimRow]) -> None:
    """``raysweep claims``: :func:`describe_parents` for every sweep parent run of `experiment`. A
    store that refuses the write costs one line on stderr, not the claims just computed."""
    client = make_client(tracking_uri)
    try:
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return
        parents = search_all(client, [found.experiment_id], f"tags.`{ROLE_TAG}` = {quote(ROLE_SWEEP)}")
        describe_parents(tracking_uri, [run.info.run_id for run in parents], rows)
    except Exception as err:  # noqa: BLE001 - the table is printed either way
        print(f"raysweep: the claims table was not written to the sweeps' MLflow descriptions "
              f"({str(err).splitlines()[0] if str(err) else type(err).__name__})", file=sys.stderr, flush=True)


def log_report(collected: Collected, out_dir: Path, claims: Sequence[ClaimRow] | None = None) -> None:
    """Log the page, its stylesheet and figures under ``report/`` of every parent (sweep) run, and
    ``claims.json`` / ``claims.csv`` at the top of its artifacts; `claims` also become each parent
    run's description (:func:`describe_parents`)."""
    client = make_client(collected.tracking_uri)
    if claims is not None:
        describe_parents(collected.tracking_uri, collected.parent_run_ids, claims)
    for run_id in collected.parent_run_ids:
        for name in CLAIM_FILES:
            client.log_artifact(run_id, str(out_dir / name))
        client.log_artifact(run_id, str(out_dir / "index.html"), "report")
        client.log_artifact(run_id, str(out_dir / STYLESHEET), "report")
        client.log_artifacts(run_id, str(out_dir / PLOTS), f"report/{PLOTS}")


def read_claims(collected: Collected, points: pd.DataFrame | None, tolerance: float | None = None,
                margins: Mapping[str, float] | None = None,
                looks: int | None = None, alpha_look: float | None = None,
                alpha_bound: float | None = None) -> tuple[list[ClaimRow], AlongTraining]:
    """The claims of the collected runs at the end of training, each marked settled or not, and
    every row read along training (:mod:`raysweep.frontier.along_training`, from MLflow's metric
    history of the finished runs). `looks`, `alpha_look`, `alpha_bound`: a look of ``--until-decided``
    (:func:`raysweep.frontier.claims.settings_from_runs`)."""
    runs = collected.runs
    settings = settings_from_runs(runs, margins, looks, alpha_look, alpha_bound)
    rows = compute_claims(runs, points, tolerance, settings=settings)
    finished = runs.loc[runs["status"] == "finished", "run_id"].tolist()
    histories = metric_histories(collected.tracking_uri, finished)
    return rows, claims_along_training(rows, runs, histories, points, tolerance, settings)


def sweep_claims(experiment: str, tracking_uri: str, tolerance: float | None = None,
                 margins: Mapping[str, float] | None = None, looks: int | None = None,
                 alpha_look: float | None = None, alpha_bound: float | None = None) -> list[ClaimRow]:
    """The claims of `experiment` (``raysweep claims``): its runs and operating points read from
    MLflow, each row marked settled or not along training; nothing drawn or written.

    Raises:
        RaysweepError: an unknown experiment or one without trial runs (naming ``--experiment``).
    """
    collected = collect_runs(tracking_uri, experiment)
    points = load_operating_points(tracking_uri, collected.parent_run_ids, collected.runs)
    return read_claims(collected, points, tolerance, margins, looks, alpha_look, alpha_bound)[0]


def build_report(
    experiment: str, tracking_uri: str, out_dir: str | Path, ui_url: str | None = None, log_to_mlflow: bool = True,
    tolerance: float | None = None, margins: Mapping[str, float] | None = None, in_progress: int | None = None,
) -> Path:
    """Draw the frontier report of `experiment` into `out_dir`; returns ``out_dir/index.html``.

    Args:
        experiment: MLflow experiment name (``--experiment``).
        tracking_uri: its tracking store.
        out_dir: where ``index.html``, ``report.css`` and ``plots/`` go (created).
        ui_url: base URL of the MLflow UI for the run links (default: the tracking server for an
            http URI, else ``http://127.0.0.1:5000``, where ``raysweep ui`` serves by default).
        log_to_mlflow: also log the report and the claims as artifacts of the sweep's parent run(s).
        tolerance: relative rate tolerance for the matched-rate claim and panel (d) (None: each
            sweep's ``search.matched_rate.tolerance``, else 0.05).
        margins: equivalence margins per claim (None: the sweep's ``search.claims.margin``, else the defaults).
        in_progress: the report of a sweep still running, of that many trials in all (0: the search
            decides): a banner saying how many have finished, and the page reloads itself.

    Raises:
        RaysweepError: an unknown experiment or one without trial runs (naming ``--experiment``).
    """
    collected = collect_runs(tracking_uri, experiment)
    out = Path(out_dir)
    plots = out / PLOTS
    if plots.is_dir():
        for stale in plots.glob("*.png"):
            stale.unlink()
    plots.mkdir(parents=True, exist_ok=True)
    if ui_url is None:
        ui_url = tracking_uri if tracking_uri.startswith(("http://", "https://")) else DEFAULT_UI_URL
    points = load_operating_points(tracking_uri, collected.parent_run_ids, collected.runs)
    runs = with_operating_points(collected.runs, points)
    finished = runs[runs["status"] == "finished"]
    profiles = load_variance_profiles(tracking_uri, finished["run_id"].tolist())
    report_groups = []
    for title, members in groups(runs):
        done = members[members["status"] == "finished"]
        report_groups.append(Group(title, members, draw_group(done, profiles, plots, title, tolerance),
                                   reconstruction_panel(done, tracking_uri, plots, slug(title))))
    point_figures = draw_operating_points(points, plots) if not points.empty else []
    claims, along = read_claims(collected, points, tolerance, margins)
    along_figures = []
    for title in dict.fromkeys(along.trajectory["group"]) if not along.trajectory.empty else []:
        name = f"{slug(title)}_e.png"
        note = plot_claims_along_training(along.trajectory[along.trajectory["group"] == title], plots / name, title)
        along_figures.append(Figure("e", f"Claims along training: {title}", None if note else name, note))
    write_claims(claims, out)
    index = render(collected, report_groups, out, ui_url.rstrip("/"), points, point_figures, claims, along_figures,
                   in_progress)
    if log_to_mlflow:
        log_report(collected, out, claims)
    return index
