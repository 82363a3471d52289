"""``search.mode: matched_rate`` in the sweep runner (:mod:`raysweep.tune.run`): the Tune pieces of
the plan (:func:`raysweep.tune.matched_rate.build_matched_rate_plan`) and, once the Tuner has
finished (a new sweep or a ``resume``), the operating points: ``<sweep dir>/operating_points.{csv,json}``,
the MLflow artifact and tags (:mod:`raysweep.tracking.operating_points`) and the summary table."""

from __future__ import annotations

import math
from typing import Any

from raysweep.tune.resources import ResourcePlan
from raysweep.tune.space import CELL_KEY, ExpandedSweep, build_param_space, cell_params
from raysweep.tune.sweep_config import SweepConfig
from raysweep.tune.trainable import is_uri


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits, None as ``-``."""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def matched_rate_param_space(sweep: SweepConfig, expanded: ExpandedSweep) -> dict[str, Any]:
    """Tune's param space of a matched-rate sweep: as for the other modes, less the ``cell`` index
    and a GECO block left empty (``objective.geco: None``) that the geco strategy's
    ``objective.geco.target_rate`` fills."""
    space = build_param_space(expanded)
    if space.get("objective.geco", 0) is None:
        del space["objective.geco"]
    # The searcher routes trials to cells by their dotted keys; a "cell" index would clash with
    # the operating points' "cell" label column.
    space.pop(CELL_KEY, None)
    return space


def matched_rate_tune_config(
    sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str, plan: ResourcePlan
) -> tuple[Any, Any]:
    """``(TuneConfig, stopper)`` of a ``search.mode: matched_rate`` sweep (see
    :func:`raysweep.tune.matched_rate.build_matched_rate_plan`): the searcher over every (cell,
    target), ASHA on ``rate_error`` when asked for, and the stopper of superseded trials."""
    from raysweep.tune.matched_rate import build_matched_rate_plan
    from raysweep.tune.run import optuna_storage_url, trial_dirname, trial_name

    assert sweep.search.matched_rate is not None
    url = optuna_storage_url(sweep, sweep_dir)
    storage = None
    if url:
        import optuna

        storage = optuna.storages.RDBStorage(url)
    cells = [{k: v for k, v in cell_params(cell, expanded.varying_keys).items() if k != CELL_KEY}
             for cell in expanded.cells]
    mr_plan = build_matched_rate_plan(
        sweep.search.matched_rate, cells, reports_per_trial=expanded.validations_per_trial() or 1,
        key_style="dotted", optuna_storage=storage,
    )
    tune_config = mr_plan.tune_config(
        max_concurrent_trials=max(1, plan.max_concurrent), trial_dirname_creator=trial_dirname,
        trial_name_creator=trial_name,
        # Matched-rate trials are short and many: one trial process serves the next (one-worker
        # trials; a DDP trial's process only drives its TorchTrainer).
        reuse_actors=not plan.uses_trainer,
    )
    return tune_config, mr_plan.stopper


def record_operating_points(results: Any, sweep: SweepConfig, sweep_dir: str) -> tuple[list[Any], str | None]:
    """Derive the operating points of a finished matched-rate sweep, write
    ``<sweep dir>/operating_points.{csv,json}`` and log them to MLflow (parent-run artifact, tags on
    the chosen trials' runs); returns ``(points, folder written)``. A tracking failure is reported
    on stderr, never raised: the points are on disk either way."""
    import logging
    import sys

    from raysweep.tracking.operating_points import log_operating_points
    from raysweep.tracking.store import tracking_uri_for
    from raysweep.tune.operating_points import derive_operating_points, write_operating_points
    from raysweep.tune.run import _write_text, sweep_dir_for

    matched = sweep.search.matched_rate
    assert matched is not None
    points = derive_operating_points(results, matched.tolerance)
    folder = sweep_dir if not is_uri(sweep_dir) else sweep_dir_for(None, sweep.name)
    files = write_operating_points(points, folder)
    if is_uri(sweep_dir):
        for path in files.values():
            _write_text(f"{sweep_dir}/{path.name}", path.read_text())
    storage = sweep_dir.rstrip("/").rpartition("/")[0]
    try:
        uri = tracking_uri_for(storage, sweep.tracking.uri)
        log_operating_points(uri, sweep.tracking.experiment or sweep.name, sweep.name, storage, points, files)
    except Exception as err:  # noqa: BLE001 - the sweep's results are on disk; tracking is best effort
        logging.getLogger(__name__).exception("raysweep tracking: logging the operating points failed")
        print(f"raysweep: operating points not logged to MLflow: {err}", file=sys.stderr)
    return points, folder

def format_operating_points(points: list[Any]) -> list[str]:
    """The operating points as table lines: cell, target, beta found, rate, distortion, anisotropy,
    trials, epochs, and whether the rate is within tolerance."""
    headers = ["cell", "target", "beta", "rate", "distortion_sse", "anisotropy", "trials", "epochs", "matched"]
    table = [[p.cell, fmt(p.target_rate), fmt(p.beta), fmt(p.rate), fmt(p.distortion_sse), fmt(p.anisotropy),
              str(p.trials), fmt(p.epochs), "yes" if p.within_tolerance else "no"] for p in points]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    lines = [f"operating points ({len(points)}; rate in nats):"]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    return lines
