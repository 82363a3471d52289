"""Search modes: what ``search.mode`` decides in a sweep, behind one interface.

A :class:`SearchMode` is built from a validated sweep (``search_mode(sweep)``) and answers every
question the runner (:mod:`raysweep.tune.run`), ``raysweep extend`` (:mod:`raysweep.tune.extend`),
the run names (:mod:`raysweep.tune.run_names`) and ``raysweep validate`` (:mod:`raysweep.tune.check`)
ask of a mode: the Tune searcher and config of a run (or of the cells an extension adds), the param
space, the keys its searcher sets itself, the line announcing the run, what ``validate`` says of it
and what a finished run adds to its outcome. None of them tests a mode's name.

The modes, each registered with ``@SEARCH_MODES.builds`` (its facts are its
:class:`raysweep.registry.SearchModeSpec`):

- ``grid``, ``random``, ``optuna`` (:class:`CellMode`): a :class:`raysweep.tune.search.CellSearcher`
  over the expanded cells, ``num_samples`` per cell for the sampling modes.
- ``matched_rate`` (:class:`MatchedRateMode`): per cell and rate target, the searcher of the
  ``search.matched_rate.strategy`` (:mod:`raysweep.tune.matched_rate`), then the operating points.

Adding a mode: its spec in :mod:`raysweep.registry`, its class here (or in its own module imported
below) with ``@SEARCH_MODES.builds("name")``, its tests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from raysweep import storage
from raysweep.names import KEY_METRICS
from raysweep.registry import SEARCH_MODES, SearchModeSpec
from raysweep.tune.resources import ResourcePlan
from raysweep.tune.space import ExpandedSweep, asha_max_t, build_param_space
from raysweep.tune.sweep_config import SweepConfig

if TYPE_CHECKING:  # the searchers import Ray; `raysweep validate` reads the modes without it
    from raysweep.tune.search import CellSearcher

__all__ = ["CellMode", "MatchedRateMode", "SearchMode", "search_mode"]


class SearchMode:
    """What a sweep's search mode decides (see the module docstring).

    Args:
        sweep: the validated sweep whose ``search.mode`` this is.
    """

    def __init__(self, sweep: SweepConfig) -> None:
        self.sweep = sweep
        self.search = sweep.search
        self.spec: SearchModeSpec = SEARCH_MODES[sweep.search.mode]

    # --------------------------------------------------------------------------- Tune pieces
    def check(self, expanded: ExpandedSweep) -> None:
        """Refuse, in one line and before Ray starts, what only the expanded sweep shows is wrong."""

    def tune_config(self, cells: ExpandedSweep, whole: ExpandedSweep, sweep_dir: str, plan: ResourcePlan,
                    *, extension: bool = False) -> tuple[Any, Any]:
        """``(TuneConfig, stopper or None)`` running the trials of `cells` (every cell of a new sweep,
        or those ``raysweep extend`` adds) of the sweep whose cells are `whole`."""
        raise NotImplementedError

    def param_space(self, whole: ExpandedSweep) -> dict[str, Any]:
        """Tune's param space (:func:`raysweep.tune.space.build_param_space`)."""
        return build_param_space(whole)

    # ---------------------------------------------------------------------------- what it sets
    def searched_keys(self) -> dict[str, list[float] | None]:
        """The trial keys its searcher sets beyond the cells' (and the distributions'), each with the
        values it takes when the file fixes them, None when the searcher finds them."""
        return {}

    def console_keys(self, keys: list[str]) -> tuple[list[str], list[str]]:
        """(parameters, metrics) the console shows, given the keys the sweep varies."""
        return keys, list(KEY_METRICS)

    def repeats_within_cell(self, expanded: ExpandedSweep) -> bool:
        """Whether one cell runs several trials the file does not tell apart (run names need the id)."""
        return expanded.samples_per_cell > 1

    # ------------------------------------------------------------------------------- messages
    def announce(self, expanded: ExpandedSweep, plan: ResourcePlan, sweep_dir: str) -> str:
        """The line a new sweep starts with."""
        return (f"raysweep: sweep {self.sweep.name}: {expanded.num_trials} trials, at most {plan.max_concurrent} "
                f"at once; results in {sweep_dir}")

    def describe(self, expanded: ExpandedSweep) -> list[str]:
        """What ``raysweep validate`` says of the trials and the search."""
        cells = len(expanded.cells)
        per_cell = f" ({cells} cells x {expanded.samples_per_cell} samples)" if expanded.samples_per_cell > 1 else ""
        return [f"trials: {expanded.num_trials}{per_cell}", f"search: {self.spec.name}"]

    def planned_trials(self, expanded: ExpandedSweep) -> int | None:
        """The trials the run of `expanded` will start (the progress line's total); None when the
        search decides as it goes."""
        return expanded.num_trials

    # -------------------------------------------------------------------------------- after
    def expected_trials(self, expanded: ExpandedSweep) -> int:
        """Trials the run of `expanded` should end with (at most, for a mode that stops early)."""
        return expanded.num_trials

    def finish(self, outcome: Any, results: Any, sweep_dir: str) -> None:
        """Add what the mode derives from a finished run to its outcome (nothing by default)."""


class CellMode(SearchMode):
    """A mode whose searcher hands out the cells' trials (:meth:`searcher_class`, see
    :mod:`raysweep.tune.search`), under the sweep's scheduler."""

    #: The name of the mode's :class:`~raysweep.tune.search.CellSearcher` subclass in :mod:`raysweep.tune.search`
    #: (imported when a sweep runs: the searchers import Ray).
    searcher_name: ClassVar[str]

    def searcher_class(self) -> type[CellSearcher]:
        """The mode's :class:`~raysweep.tune.search.CellSearcher` subclass."""
        from raysweep.tune import search

        searcher: type[CellSearcher] = getattr(search, self.searcher_name)
        return searcher

    def check(self, expanded: ExpandedSweep) -> None:
        if self.search.scheduler.type == "asha":
            asha_max_t(self.search.scheduler, expanded)  # a max_t it cannot infer, a grace period beyond it

    def searcher(self, cells: ExpandedSweep, plan: ResourcePlan, sweep_dir: str) -> CellSearcher:
        """The searcher of `cells` (with the sweep's Optuna settings and storage, if it has them)."""
        search = self.search
        return self.searcher_class()(
            cells, max_concurrent=plan.max_concurrent, random_seed=search.random_seed, optuna=search.optuna,
            optuna_storage=storage.optuna_storage_url(self.sweep, sweep_dir), study_prefix=self.sweep.name,
        )

    def tune_config(self, cells: ExpandedSweep, whole: ExpandedSweep, sweep_dir: str, plan: ResourcePlan,
                    *, extension: bool = False) -> tuple[Any, Any]:
        from ray import tune

        from raysweep.tune.search import build_scheduler

        return tune.TuneConfig(
            search_alg=self.searcher(cells, plan, sweep_dir), scheduler=build_scheduler(self.search, whole),
            num_samples=cells.num_trials, trial_dirname_creator=storage.trial_dirname,
            trial_name_creator=storage.trial_name,
            # One trial process serves the next trial: no new Python + torch start-up per trial. Not
            # for DDP trials: a stopped one's process still runs its TorchTrainer (Tune cannot stop
            # that thread), so reusing it fails, and it must end for its worker group to go.
            reuse_actors=not plan.uses_trainer,
        ), None


@SEARCH_MODES.builds("grid")
class GridMode(CellMode):
    """``search.mode: grid``: each cell once."""

    searcher_name = "GridSearcher"


@SEARCH_MODES.builds("random")
class RandomMode(CellMode):
    """``search.mode: random``: ``num_samples`` draws of ``search.distributions`` per cell."""

    searcher_name = "RandomSearcher"


@SEARCH_MODES.builds("optuna")
class OptunaMode(CellMode):
    """``search.mode: optuna``: ``num_samples`` TPE suggestions per cell, one Optuna study per cell."""

    searcher_name = "OptunaCellSearcher"


@SEARCH_MODES.builds("matched_rate")
class MatchedRateMode(SearchMode):
    """Per cell and rate target, the beta (GECO: the run) meeting the target
    (:mod:`raysweep.tune.matched_rate`); a finished run writes and logs its operating points."""

    def __init__(self, sweep: SweepConfig) -> None:
        super().__init__(sweep)
        assert sweep.search.matched_rate is not None
        self.matched = sweep.search.matched_rate

    def tune_config(self, cells: ExpandedSweep, whole: ExpandedSweep, sweep_dir: str, plan: ResourcePlan,
                    *, extension: bool = False) -> tuple[Any, Any]:
        from raysweep.tune.matched_rate.plan import earlier_operating_points, matched_rate_tune_config

        # An extension's tasks start warm from the points already found (and rerun none of them).
        known = earlier_operating_points(sweep_dir) if extension else None
        return matched_rate_tune_config(self.sweep, cells, sweep_dir, plan, known_points=known)

    def param_space(self, whole: ExpandedSweep) -> dict[str, Any]:
        from raysweep.tune.matched_rate.plan import matched_rate_param_space

        return matched_rate_param_space(self.sweep, whole)

    def searched_keys(self) -> dict[str, list[float] | None]:
        from raysweep.tune.matched_rate.points import BETA_KEY, GECO_TARGET_KEY, TARGET_KEY

        keys: dict[str, list[float] | None] = {}
        if len(self.matched.targets) > 1:
            keys[GECO_TARGET_KEY if self.matched.steers else TARGET_KEY] = list(self.matched.targets)
        if not self.matched.steers:
            keys[BETA_KEY] = None
        return keys

    def console_keys(self, keys: list[str]) -> tuple[list[str], list[str]]:
        from raysweep.tune.matched_rate.points import BETA_KEY, GECO_TARGET_KEY, RATE_ERROR

        return [*keys, GECO_TARGET_KEY if self.matched.steers else BETA_KEY], [*KEY_METRICS, RATE_ERROR]

    def repeats_within_cell(self, expanded: ExpandedSweep) -> bool:
        return not self.matched.steers  # probes of one (cell, target); a GECO run is one per task

    def announce(self, expanded: ExpandedSweep, plan: ResourcePlan, sweep_dir: str) -> str:
        return (f"raysweep: sweep {self.sweep.name}: matched rate ({self.matched.strategy}), {len(expanded.cells)} "
                f"cells x {len(self.matched.targets)} targets, at most {plan.max_concurrent} trials at once; "
                f"results in {sweep_dir}")

    def describe(self, expanded: ExpandedSweep) -> list[str]:
        mr, cells = self.matched, len(expanded.cells)
        tasks, each = cells * len(mr.targets), mr.trials_per_task
        seeds = len(self.search.seeds) if self.search.seeds is not None else 1  # each seed its own points
        by_seed = f" ({cells // seeds} x {seeds} seeds)" if seeds > 1 else ""
        lines = [
            f"trials: at most {tasks * each} ({cells} cell{'s' * (cells != 1)}{by_seed} x {len(mr.targets)} "
            f"target{'s' * (len(mr.targets) != 1)} = {tasks} operating point{'s' * (tasks != 1)}, "
            f"up to {each} trial{'s' * (each != 1)} each)",
            f"search: {self.spec.name}, strategy {mr.strategy}, targets "
            f"{', '.join(f'{t:g}' for t in mr.targets)} nats, tolerance {mr.tolerance:g} (relative)",
        ]
        if not mr.steers:
            lines.append(f"  beta bracket [{mr.beta_min:g}, {mr.beta_max:g}], {mr.probes} probes in flight per "
                         f"(cell, target)" + (", ASHA on rate_error" if mr.uses_asha else ""))
        return lines

    def planned_trials(self, expanded: ExpandedSweep) -> int | None:
        return None  # probes until each (cell, target) is matched or out of trials

    def expected_trials(self, expanded: ExpandedSweep) -> int:
        return len(expanded.cells) * len(self.matched.targets)

    def finish(self, outcome: Any, results: Any, sweep_dir: str) -> None:
        from raysweep.tune.matched_rate.plan import record_operating_points

        outcome.operating_points, outcome.operating_points_dir = record_operating_points(results, self.sweep, sweep_dir)


def search_mode(sweep: SweepConfig) -> SearchMode:
    """The :class:`SearchMode` of `sweep` (``search.mode``)."""
    mode: SearchMode = SEARCH_MODES.code(sweep.search.mode)(sweep)
    return mode
