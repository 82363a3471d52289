"""``search.mode: matched_rate`` in the sweep runner (:mod:`raysweep.tune.run`): the Tune pieces of a
matched-rate sweep before the Tuner runs, and its operating points after it has finished (a new
sweep or a ``resume``).

Before: :func:`build_matched_rate_plan` (searcher, ASHA on ``rate_error`` when asked for, the
stopper of superseded trials), with :func:`matched_rate_tune_config` and
:func:`matched_rate_param_space` adapting it to a sweep. After: :func:`record_operating_points`
writes ``<sweep dir>/operating_points.{csv,json}`` (with the points already there: a sweep that
grew keeps them) and logs them to MLflow
(:mod:`raysweep.tracking.operating_points`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raysweep import storage
from raysweep.names import OPERATING_POINTS_JSON
from raysweep.registry import MATCHED_RATE_STRATEGIES
from raysweep.tune.matched_rate.points import (
    RATE_ERROR,
    SEED_KEY,
    OperatingPoint,
    derive_operating_points,
    merge_operating_points,
    read_operating_points,
    write_operating_points,
)
from raysweep.tune.matched_rate.searchers import MatchedRateSearcher, SupersededTrialStopper
from raysweep.tune.resources import ResourcePlan
from raysweep.tune.space import CELL_KEY, ExpandedSweep, build_param_space, cell_params
from raysweep.tune.sweep_config import MatchedRateSearch, SweepConfig

logger = logging.getLogger(__name__)


@dataclass
class MatchedRatePlan:
    """What a sweep runner needs for ``search.mode: matched_rate``: pass ``tune_config()`` to
    the Tuner and ``stopper`` to ``RunConfig(stop=...)``; after the run, call
    ``derive_operating_points(result_grid, plan.tolerance)``."""

    searcher: MatchedRateSearcher
    scheduler: Any  # an ASHAScheduler, or None for FIFO
    stopper: SupersededTrialStopper
    tolerance: float
    metric: str = RATE_ERROR
    mode: str = "min"

    def tune_config(self, **kwargs: Any) -> Any:
        """``tune.TuneConfig`` with the searcher, scheduler, metric/mode and ``num_samples=-1``."""
        from ray import tune

        return tune.TuneConfig(search_alg=self.searcher, scheduler=self.scheduler, metric=self.metric,
                               mode=self.mode, num_samples=-1, **kwargs)


def build_matched_rate_plan(search: MatchedRateSearch, cells: list[Mapping[str, Any]] | None,
                            reports_per_trial: int, optuna_storage: Any = None) -> MatchedRatePlan:
    """Searcher, scheduler and stopper for a matched-rate sweep.

    ``cells``: dotted overrides, one mapping per cell (the sweep's grid without ``objective.beta``).
    ``reports_per_trial``: validations in one full-length trial (ASHA's ``max_t`` on
    ``training_iteration``; an upper bound is fine). ``optuna_storage``: an Optuna storage for the
    optuna strategy's studies (None: in memory).
    """
    strategy = MATCHED_RATE_STRATEGIES.code(search.strategy)  # its searcher class (matched_rate.searchers)
    searcher: MatchedRateSearcher = strategy.from_search(search, cells, optuna_storage)
    scheduler = None
    if search.uses_asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(1, reports_per_trial),
                                  grace_period=min(search.grace_period, max(1, reports_per_trial)),
                                  reduction_factor=search.reduction_factor)
    return MatchedRatePlan(searcher, scheduler, SupersededTrialStopper(searcher), search.tolerance)


# ----------------------------------------------------------------------------- in a sweep
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


def searcher_cells(sweep: SweepConfig, expanded: ExpandedSweep) -> list[dict[str, Any]]:
    """The searcher's cells of `expanded`: the keys the sweep varies, and ``train.seed`` whenever
    the sweep has ``search.seeds`` (even one seed), so every operating point says its seed."""
    cells = []
    for cell in expanded.cells:
        params = {k: v for k, v in cell_params(cell, expanded.varying_keys).items() if k != CELL_KEY}
        if sweep.search.seeds is not None:
            params[SEED_KEY] = cell.flat[SEED_KEY]
        cells.append(params)
    return cells


def matched_rate_tune_config(
    sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str, plan: ResourcePlan,
    known_points: list[OperatingPoint] | None = None,
) -> tuple[Any, Any]:
    """``(TuneConfig, stopper)`` of a ``search.mode: matched_rate`` sweep (see
    :func:`build_matched_rate_plan`): the searcher over every (cell, target, seed), ASHA on
    ``rate_error`` when asked for, and the stopper of superseded trials. ``known_points``: the
    operating points of trials already run (``raysweep extend``), facts for the warm starts."""
    assert sweep.search.matched_rate is not None
    url = storage.optuna_storage_url(sweep, sweep_dir)
    optuna_storage = None
    if url:
        import optuna

        optuna_storage = optuna.storages.RDBStorage(url)
    mr_plan = build_matched_rate_plan(sweep.search.matched_rate, searcher_cells(sweep, expanded),
                                      reports_per_trial=expanded.validations_per_trial() or 1,
                                      optuna_storage=optuna_storage)
    if known_points:
        mr_plan.searcher.known_points(known_points)
    tune_config = mr_plan.tune_config(
        max_concurrent_trials=max(1, plan.max_concurrent), trial_dirname_creator=storage.trial_dirname,
        trial_name_creator=storage.trial_name,
        # Matched-rate trials are short and many: one trial process serves the next (one-worker
        # trials; a DDP trial's process only drives its TorchTrainer).
        reuse_actors=not plan.uses_trainer,
    )
    return tune_config, mr_plan.stopper


def earlier_operating_points(sweep_dir: str) -> list[OperatingPoint]:
    """The operating points ``<sweep dir>/operating_points.json`` holds (none before the first)."""
    return read_operating_points(storage.read_text(f"{sweep_dir}/{OPERATING_POINTS_JSON}"))


def record_operating_points(results: Any, sweep: SweepConfig, sweep_dir: str) -> tuple[list[OperatingPoint], str]:
    """Derive the operating points of a finished matched-rate sweep, write
    ``<sweep dir>/operating_points.{csv,json}`` and log them to MLflow (parent-run artifact, tags on
    the chosen trials' runs); returns ``(points, folder written)``. A sweep on object storage
    writes them in its local folder (``./runs/<name>``) and copies them beside its results. A
    tracking failure is reported on stderr, never raised: the points are on disk either way."""
    from raysweep.tracking.operating_points import log_operating_points
    from raysweep.tracking.store import tracking_uri_for

    matched = sweep.search.matched_rate
    assert matched is not None
    # A sweep that grew (raysweep extend) keeps the points of the trials run before: its newest
    # experiment's results hold only the tasks it added.
    points = merge_operating_points(earlier_operating_points(sweep_dir),
                                    derive_operating_points(results, matched.tolerance))
    folder = storage.local_sweep_dir(sweep_dir, sweep.name)
    files = write_operating_points(points, folder)
    if storage.is_uri(sweep_dir):
        for path in files.values():
            storage.write_text(f"{sweep_dir}/{path.name}", path.read_text())
    storage_root, _ = storage.split_sweep_dir(sweep_dir)
    try:
        uri = tracking_uri_for(storage_root, sweep.tracking.uri)
        log_operating_points(uri, sweep.tracking.experiment or sweep.name, sweep.name, storage_root, points, files)
    except Exception as err:  # noqa: BLE001 - the sweep's results are on disk; tracking is best effort
        logger.exception("raysweep tracking: logging the operating points failed")
        print(f"raysweep: operating points not logged to MLflow: {err}", file=sys.stderr)
    return points, folder
