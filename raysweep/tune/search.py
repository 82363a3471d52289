"""Schedulers and the searchers of the modes that hand out trials cell by cell.

A :class:`CellSearcher` hands out every trial of a sweep, cell by cell (see
:mod:`raysweep.tune.space`), round robin over the cells, with at most the resource plan's
concurrency in flight; its whole state (the live trials included) is pickled with the experiment,
so ``Tuner.restore`` continues exactly where the sweep stopped. What a trial of a cell gets beyond
the cell's own keys is its subclass's: nothing (:class:`GridSearcher`, once per cell), a random
draw of ``search.distributions`` (:class:`RandomSearcher`, ``num_samples`` per cell), or an Optuna
TPE suggestion (:class:`OptunaCellSearcher`, ``num_samples`` per cell from one ``OptunaSearch``, one
Optuna study, per cell: how a grid combines with Optuna, which Ray forbids inside one
``OptunaSearch``). Optuna studies are stored in an RDB storage (``sqlite:///<sweep dir>/optuna.db``
by default) that survives a resume and that ``optuna-dashboard`` opens.

The matched-rate strategies' searchers (:mod:`raysweep.tune.matched_rate.searchers`) are Tune
searchers too; which searcher a sweep runs is its search mode's (:mod:`raysweep.tune.modes`).

ASHA counts time in validations: every report of the training loop is one ``training_iteration``.
"""

from __future__ import annotations

import math
import pickle
from typing import Any

import numpy as np
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from raysweep.tune import ray_shim
from raysweep.tune.space import ExpandedSweep, asha_max_t, cell_params, ray_domain
from raysweep.tune.sweep_config import DistributionConfig, OptunaConfig, SearchConfig


def build_scheduler(search: SearchConfig, expanded: ExpandedSweep) -> TrialScheduler:
    """FIFO, or ASHA with one time step per validation (``max_t``: :func:`raysweep.tune.space.asha_max_t`)."""
    sched = search.scheduler
    if sched.type == "fifo":
        return FIFOScheduler()
    return ASHAScheduler(time_attr="training_iteration", metric=sched.metric, mode=sched.mode,
                         max_t=asha_max_t(sched, expanded), grace_period=sched.grace_period,
                         reduction_factor=sched.reduction_factor)


def sample_distribution(dist: DistributionConfig, rng: np.random.Generator) -> Any:
    """One draw of `dist` (plain Python values, so they serialise into the trial config)."""
    if dist.choice is not None:
        return dist.choice[int(rng.integers(len(dist.choice)))]
    low, high = getattr(dist, dist.kind)
    if dist.kind == "uniform":
        return float(rng.uniform(low, high))
    if dist.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return int(rng.integers(low, high))


class CellSearcher(Searcher):
    """Hands out ``expanded.samples_per_cell`` trials per cell (see the module docstring); a
    subclass says what each trial gets beyond its cell's keys (:meth:`_draw`).

    Args:
        expanded: the sweep's cells and distributions.
        max_concurrent: most trials in flight (the resource plan's concurrency).
        random_seed: seed of the random draws.
        optuna: metric, mode and sampler seed of the Optuna studies.
        optuna_storage: Optuna storage URL (an RDB URL such as ``sqlite:///.../optuna.db``).
        study_prefix: prefix of the per-cell study names (the sweep name).
    """

    def __init__(
        self,
        expanded: ExpandedSweep,
        max_concurrent: int,
        random_seed: int = 0,
        optuna: OptunaConfig | None = None,
        optuna_storage: str | None = None,
        study_prefix: str = "sweep",
    ) -> None:
        super().__init__(metric=optuna.metric if optuna else None, mode=optuna.mode if optuna else None)
        varying = expanded.varying_keys
        self._cells = [cell_params(cell, varying) for cell in expanded.cells]
        self._labels = [cell.label() for cell in expanded.cells]
        self._samples = expanded.samples_per_cell
        self._distributions = dict(expanded.distributions)
        self._max_concurrent = max(1, max_concurrent)
        self._rng = np.random.default_rng(random_seed)
        self._optuna = optuna
        self._optuna_storage = optuna_storage
        self._study_prefix = study_prefix
        self._inner: dict[int, Searcher] = {}
        self._issued = [0] * len(self._cells)
        self._live: dict[str, int] = {}

    def _draw(self, cell: int, trial_id: str) -> dict[str, Any] | None:
        """What trial `trial_id` of `cell` gets beyond the cell's keys; None: nothing yet (ask later)."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------- Searcher API
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        # The param space only holds constants and display placeholders that every suggestion fills.
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if len(self._live) >= self._max_concurrent:
            return None
        cell = self._next_cell()
        if cell is None:
            return Searcher.FINISHED
        sampled = self._draw(cell, trial_id)
        if sampled is None:
            return None
        self._issued[cell] += 1
        self._live[trial_id] = cell
        return {**self._cells[cell], **sampled}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        cell = self._live.get(trial_id)
        if cell is not None and cell in self._inner:
            from optuna.exceptions import UpdateFinishedTrialError

            try:
                self._inner[cell].on_trial_result(trial_id, result)
            except UpdateFinishedTrialError:
                pass  # a trial the study finished before the driver died, rerun after resume

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        cell = self._live.pop(trial_id, None)
        if cell is not None and cell in self._inner:
            inner_result = result
            if result is not None and self.metric and not _finite(result.get(self.metric)):
                inner_result, error = None, True  # a diverged trial: a failed Optuna trial, not a score
            from optuna.exceptions import UpdateFinishedTrialError

            try:
                self._inner[cell].on_trial_complete(trial_id, inner_result, error)
            except UpdateFinishedTrialError:
                # The driver was killed after the study recorded this trial but before Tune saved
                # the searcher: on resume the rerun trial completes again; the study already has it.
                pass

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as handle:
            pickle.dump(self.__dict__, handle)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as handle:
            self.__dict__.update(pickle.load(handle))
        self._fail_orphaned_optuna_trials()

    def _fail_orphaned_optuna_trials(self) -> None:
        """Mark FAIL the Optuna trials asked for after the saved state (the sweep stopped before it
        recorded them): nothing will ever tell them, and a study must not show them running forever."""
        import optuna

        for inner in self._inner.values():
            study, known = ray_shim.optuna_search_study(inner)
            if study is None:
                continue
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                if trial.number not in known:
                    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)

    # -------------------------------------------------------------------------------- helpers
    def _next_cell(self) -> int | None:
        """The cell with the fewest trials handed out that still has budget (round robin)."""
        open_cells = [i for i, n in enumerate(self._issued) if n < self._samples]
        if not open_cells:
            return None
        return min(open_cells, key=lambda i: (self._issued[i], i))

class GridSearcher(CellSearcher):
    """``search.mode: grid``: each cell once, as the sweep file fixes it."""

    def _draw(self, cell: int, trial_id: str) -> dict[str, Any]:
        return {}


class RandomSearcher(CellSearcher):
    """``search.mode: random``: ``num_samples`` independent draws of ``search.distributions`` per cell,
    reproducible from ``search.random_seed``."""

    def _draw(self, cell: int, trial_id: str) -> dict[str, Any]:
        return {k: sample_distribution(d, self._rng) for k, d in self._distributions.items()}


class OptunaCellSearcher(CellSearcher):
    """``search.mode: optuna``: ``num_samples`` TPE suggestions per cell from the cell's own study."""

    def _draw(self, cell: int, trial_id: str) -> dict[str, Any] | None:
        sampled = self._study(cell).suggest(trial_id)
        if sampled is None or sampled == Searcher.FINISHED:
            return None
        return sampled

    def _study(self, cell: int) -> Searcher:
        """This cell's OptunaSearch (its own study in the shared storage), created on first use."""
        if cell not in self._inner:
            import optuna
            from ray.tune.search.optuna import OptunaSearch

            assert self._optuna is not None
            storage = optuna.storages.RDBStorage(self._optuna_storage) if self._optuna_storage else None
            seed = None if self._optuna.sampler_seed is None else self._optuna.sampler_seed + cell
            name = f"{self._study_prefix}/cell{cell}" + (f"[{self._labels[cell]}]" if len(self._cells) > 1 else "")
            self._inner[cell] = OptunaSearch(
                space={k: ray_domain(d) for k, d in self._distributions.items()},
                metric=self._optuna.metric, mode=self._optuna.mode,
                sampler=optuna.samplers.TPESampler(seed=seed), study_name=name[:500], storage=storage,
            )
        return self._inner[cell]



def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
