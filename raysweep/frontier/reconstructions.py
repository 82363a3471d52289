"""The report's reconstruction panel of one group: rows lambda, columns the same validation images, at each beta.

Every trial with ``train.log_images`` logs, at each validation, a grid of the first validation images (the
same for every trial of a sweep) over its reconstructions as an MLflow image (key
:data:`~raysweep.names.RECONSTRUCTIONS_KEY`). The panel takes each finished run's grid of its last
validation: per beta (per rate target R* for runs that have one) a table whose first row is the
validation images and whose other rows are the reconstructions at each lambda, from the run with the
lowest seed there. The strips are cut from the logged grids into ``plots/`` beside the report's figures,
so the page still opens from disk with no server.
"""

from __future__ import annotations

import html
import math
import tempfile
from pathlib import Path

import pandas as pd

from raysweep.frontier.collect import no_progress_bars
from raysweep.names import RECONSTRUCTIONS_KEY
from raysweep.tracking import runs as run_writer
from raysweep.tracking.store import make_client

__all__ = ["reconstruction_panel"]


def _last_grid(client: object, run_id: str, folder: Path) -> Path | None:
    """The run's reconstruction grid of its last logged step, downloaded into `folder`; None without one."""
    steps = run_writer.logged_reconstruction_steps(client, run_id)  # type: ignore[arg-type]
    if not steps:
        return None
    last = max(steps)
    prefix = (f"{RECONSTRUCTIONS_KEY}+step+{last}+", f"{RECONSTRUCTIONS_KEY}%step%{last}%")
    names = sorted(Path(info.path).name for info in client.list_artifacts(run_id, "images"))  # type: ignore[attr-defined]
    chosen = [n for n in names if n.startswith(prefix) and n.endswith(".png")]
    if not chosen:
        return None
    return Path(client.download_artifacts(run_id, f"images/{chosen[-1]}", str(folder)))  # type: ignore[attr-defined]


def _halves(path: Path) -> tuple[object, object]:
    """(validation images, reconstructions): the top and bottom row of a grid (1 px padding)."""
    from PIL import Image

    with Image.open(path) as image:
        grid = image.convert("RGB")
    middle = (grid.height - 1) // 2
    return grid.crop((0, 0, grid.width, middle + 1)), grid.crop((0, middle, grid.width, grid.height))


def _number(value: object) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number


def reconstruction_panel(members: pd.DataFrame, tracking_uri: str, plots: Path, slug: str) -> str:
    """The panel's HTML for the finished runs `members` of one group (empty when none logged a grid);
    the strips are written to `plots` as ``<slug>_recon_*.png``."""
    finished = members[members["status"] == "finished"].copy()
    if finished.empty:
        return ""
    target = pd.to_numeric(finished.get("target_rate"), errors="coerce") if "target_rate" in finished else None
    finished["_at"] = [f"R* = {t:g} nats" if target is not None and math.isfinite(t) else f"β = {_number(b):g}"
                       for t, b in zip(target if target is not None else [math.nan] * len(finished),
                                       finished["beta"], strict=True)]
    finished["_lambda"] = [_number(v) for v in finished["lambda_neural"]]
    finished["_seed"] = [_number(v) for v in finished.get("seed", pd.Series([math.nan] * len(finished)))]
    client = make_client(tracking_uri)
    tables = []
    with tempfile.TemporaryDirectory(prefix="raysweep_recon_") as tmp, no_progress_bars():
        for t, (at, runs) in enumerate(sorted(finished.groupby("_at"), key=lambda kv: kv[0])):
            rows, header = [], None
            for lam, cell in sorted(runs.groupby("_lambda"), key=lambda kv: kv[0]):
                chosen = cell.sort_values("_seed", na_position="last").iloc[0]
                grid = _last_grid(client, chosen["run_id"], Path(tmp) / chosen["run_id"])
                if grid is None:
                    continue
                top, bottom = _halves(grid)
                name = f"{slug}_recon_{t}_{len(rows)}.png"
                bottom.save(plots / name)  # type: ignore[attr-defined]
                if header is None:
                    header = f"{slug}_recon_{t}_images.png"
                    top.save(plots / header)  # type: ignore[attr-defined]
                seed = "" if math.isnan(chosen["_seed"]) else f" (seed {chosen['_seed']:.0f})"
                rows.append(f'<tr><th>λ = {lam:g}{seed}</th><td><img src="plots/{name}" '
                            f'alt="reconstructions at λ = {lam:g}, {html.escape(at)}"></td></tr>')
            if header is not None:
                tables.append(f'<table class="recon"><caption>{html.escape(at)}</caption>\n'
                              f'<tr><th>validation images</th><td><img src="plots/{header}" alt="validation images">'
                              f"</td></tr>\n" + "\n".join(rows) + "\n</table>")
    if not tables:
        return ""
    return ('<div class="recon-panel"><h3>Reconstructions at the last validation</h3>\n'
            '<p class="meta">The same validation images for every run; each row the run at that λ with the '
            "lowest seed. Every validation's grid is on the run in MLflow (its images, per step).</p>\n"
            + "\n".join(tables) + "\n</div>")
