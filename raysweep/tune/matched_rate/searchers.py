"""The matched-rate searchers under Tune: one ``Searcher`` over every (cell, target) of a sweep per
strategy, and the stopper of superseded trials (see :mod:`raysweep.tune.matched_rate`).

- :class:`MatchedRateSearcher`: the shared machinery: (cell, target) tasks, routing trials to them,
  the ledger of :class:`~raysweep.tune.matched_rate.points.TrialRecord`, ``FINISHED`` and
  save/restore (its whole state is pickled with the experiment, so ``Tuner.restore`` continues it);
- :class:`BisectionSearcher` (one :class:`~raysweep.tune.matched_rate.bisection.BetaBracket` per task),
  :class:`OptunaRateSearcher` (one TPE study per task) and :class:`GecoSearcher` (one GECO run per task);
- :class:`SupersededTrialStopper`: stops the trials of a task another trial has already matched.

Suggestions are flat dotted configs (the sweep runner's convention: its param space is the flat
trial config): the cell's keys, ``objective.beta`` (GECO: ``objective.geco.target_rate``) and
:data:`~raysweep.tune.matched_rate.points.META_KEY`.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher
from ray.tune.stopper import Stopper

from raysweep.tune.matched_rate.bisection import BetaBracket
from raysweep.tune.matched_rate.points import (
    BETA_KEY,
    GECO_TARGET_KEY,
    META_KEY,
    RATE_ERROR,
    OperatingPoint,
    TrialRecord,
    cell_label,
    derive_operating_points,
    record_from_result,
    within_tolerance,
)
from raysweep.tune.sweep_config import StoppedTrials


class MatchedRateSearcher(Searcher):
    """Shared machinery: (cell, target) tasks, routing trials to them, the ledger of trial
    records, ``FINISHED``, save/restore. Subclasses implement ``_propose`` and ``_observe``.

    Args:
        cells: dotted overrides, one mapping per cell (None: one cell, the base config).
        targets: rate targets R* (nats); every cell is searched at every target.
        tolerance: relative, ``|R / R* - 1| <= tolerance`` ends a task as matched.
        probes: trials in flight at once per (cell, target).
        max_trials: trials per (cell, target) before the task ends as exhausted.
    """

    strategy = ""

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 probes: int = 2, max_trials: int = 12) -> None:
        super().__init__(metric=RATE_ERROR, mode="min")
        cells = [dict(c) for c in (cells or [{}])]
        labels = [cell_label(c) for c in cells]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate cells: {labels}")
        self.cells = dict(zip(labels, cells, strict=True))
        self.tasks: list[tuple[str, float]] = [(lab, float(t)) for lab in labels for t in targets]
        self.tolerance, self.probes, self.max_trials = tolerance, probes, max_trials
        self.status = {task: "searching" for task in self.tasks}
        self.started = {task: 0 for task in self.tasks}
        self.live: dict[str, tuple[str, float]] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.last_results: dict[str, dict[str, Any]] = {}
        self.records: list[TrialRecord] = []

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Accept the Tuner's metric/mode; the search space is the searcher's own."""
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _propose(self, task: tuple[str, float], trial_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _observe(self, task: tuple[str, float], trial_id: str, record: TrialRecord,
                 result: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A config for the (cell, target) with the fewest trials that has a free probe slot."""
        if all(s != "searching" for s in self.status.values()):
            return Searcher.FINISHED
        for task in sorted(self.tasks, key=lambda t: self.started[t]):
            if self.status[task] != "searching":
                continue
            assignments = self._propose(task, trial_id)
            if assignments is None:
                continue
            cell, target = task
            meta = {"cell": cell, "cell_params": self.cells[cell], "target": target, "strategy": self.strategy}
            config: dict[str, Any] = {**self.cells[cell], **assignments}
            config[META_KEY] = meta
            self.live[trial_id] = task
            self.configs[trial_id] = config
            self.started[task] += 1
            return config
        if all(s != "searching" for s in self.status.values()):
            return Searcher.FINISHED
        return None

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.live:
            self.last_results[trial_id] = dict(result)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        task = self.live.pop(trial_id, None)
        last = self.last_results.pop(trial_id, None)
        if task is None:
            return
        metrics = result if result else last
        record = record_from_result(trial_id, self.configs[trial_id], metrics, error)
        assert record is not None
        self.records.append(record)
        self._observe(task, trial_id, record, result)

    def is_superseded(self, trial_id: str) -> bool:
        """True for a trial still running whose (cell, target) is already matched."""
        task = self.live.get(trial_id)
        return task is not None and self.status[task] == "matched"

    def operating_points(self) -> list[OperatingPoint]:
        """Operating points from this searcher's own ledger (every trial it has heard back from)."""
        return derive_operating_points(self.records, self.tolerance)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as fh:
            pickle.dump(self.__dict__.copy(), fh)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as fh:
            self.__dict__.update(pickle.load(fh))


class BisectionSearcher(MatchedRateSearcher):
    """Bisection on log beta per (cell, target), ``probes`` trials in flight each (see
    :class:`~raysweep.tune.matched_rate.bisection.BetaBracket`). ``stopped_trials`` says what an early-stopped trial proves:

    - ``"ignore"`` (default, always valid): nothing; it only counts as compute.
    - ``"rate_rises"``: assumes the rate never falls during training at fixed beta (measured for
      the tiny VAE on XYSquares with a cosine learning rate: it climbs to a plateau), so a last
      rate above R* proves the converged rate is above R*, i.e. beta is too small. A last rate below
      R* proves nothing.
    - ``"rate_falls"``: the converse assumption; a last rate below R* proves beta too large.
    """

    strategy = "bisection"

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 beta_min: float = 0.01, beta_max: float = 10.0, probes: int = 2, max_trials: int = 12,
                 stopped_trials: StoppedTrials = "ignore") -> None:
        super().__init__(cells, targets, tolerance, probes, max_trials)
        self.stopped_trials = stopped_trials
        self.brackets = {task: BetaBracket(task[1], tolerance, math.log(beta_min), math.log(beta_max), probes,
                                           max_trials) for task in self.tasks}
        self.trial_log_beta: dict[str, float] = {}

    def _propose(self, task: tuple[str, float], trial_id: str) -> dict[str, Any] | None:
        bracket = self.brackets[task]
        x = bracket.propose()
        self.status[task] = bracket.status
        if x is None:
            return None
        self.trial_log_beta[trial_id] = x
        return {BETA_KEY: math.exp(x)}

    def _observe(self, task: tuple[str, float], trial_id: str, record: TrialRecord,
                 result: dict[str, Any] | None) -> None:
        bracket = self.brackets[task]
        rate = None if record.error else record.rate
        bracket.observe(self.trial_log_beta[trial_id], rate, record.converged, self.stopped_trials)
        self.status[task] = bracket.status


class OptunaRateSearcher(MatchedRateSearcher):
    """One ``ray.tune.search.optuna.OptunaSearch`` (TPE over log beta, minimising ``rate_error``)
    per (cell, target). A trial stopped early (by ASHA) is told to Optuna as PRUNED at its last
    ``rate_error``, not as a finished value. A task ends when a converged trial is within
    ``tolerance`` or after ``max_trials``. ``storage``: an Optuna storage (e.g. RDB) for the
    studies, named ``matched_rate:<cell>:<target>``, so optuna-dashboard can open them.
    """

    strategy = "optuna"

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 beta_min: float = 0.01, beta_max: float = 10.0, probes: int = 2, max_trials: int = 12,
                 startup_trials: int = 4, seed: int = 0, storage: Any = None) -> None:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        super().__init__(cells, targets, tolerance, probes, max_trials)
        self.studies: dict[tuple[str, float], OptunaSearch] = {}
        for i, task in enumerate(self.tasks):
            sampler = optuna.samplers.TPESampler(seed=seed + i, n_startup_trials=startup_trials)
            space = {"beta": optuna.distributions.FloatDistribution(beta_min, beta_max, log=True)}
            self.studies[task] = OptunaSearch(space, metric=RATE_ERROR, mode="min", sampler=sampler,
                                              study_name=f"matched_rate:{task[0]}:{task[1]:g}", storage=storage)

    def _propose(self, task: tuple[str, float], trial_id: str) -> dict[str, Any] | None:
        in_flight = sum(1 for t in self.live.values() if t == task)
        if in_flight >= self.probes or self.started[task] >= self.max_trials:
            return None
        return {BETA_KEY: float(self.studies[task].suggest(trial_id)["beta"])}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        super().on_trial_result(trial_id, result)
        task = self.live.get(trial_id)
        if task is not None and RATE_ERROR in result:
            self.studies[task].on_trial_result(trial_id, result)

    def _observe(self, task: tuple[str, float], trial_id: str, record: TrialRecord,
                 result: dict[str, Any] | None) -> None:
        study = self.studies[task]
        if record.converged or record.error:
            study.on_trial_complete(trial_id, result, error=record.error)
        else:  # stopped early: report its last value, then close it as pruned
            if result and RATE_ERROR in result and "training_iteration" in result:
                study.on_trial_result(trial_id, result)
            study.on_trial_complete(trial_id, None)
        done = [r for r in self.records if r.task == task and r.converged]
        if any(within_tolerance(r.rate, task[1], self.tolerance) for r in done):
            self.status[task] = "matched"
        elif self.started[task] >= self.max_trials and not any(t == task for t in self.live.values()):
            self.status[task] = "exhausted"


class GecoSearcher(MatchedRateSearcher):
    """One GECO run per (cell, target): ``objective.geco.target_rate = target``, beta starting at the
    base config's ``objective.beta``. ``max_trials`` > 1 retries a task whose run failed."""

    strategy = "geco"

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 max_trials: int = 1) -> None:
        super().__init__(cells, targets, tolerance, 1, max_trials)

    def _propose(self, task: tuple[str, float], trial_id: str) -> dict[str, Any] | None:
        if any(t == task for t in self.live.values()) or self.started[task] >= self.max_trials:
            return None
        return {GECO_TARGET_KEY: task[1]}

    def _observe(self, task: tuple[str, float], trial_id: str, record: TrialRecord,
                 result: dict[str, Any] | None) -> None:
        if not record.error:
            self.status[task] = "matched" if within_tolerance(record.rate, task[1], self.tolerance) else "exhausted"
        elif self.started[task] >= self.max_trials:
            self.status[task] = "exhausted"


class SupersededTrialStopper(Stopper):
    """Stops trials of a (cell, target) that another trial has already matched (saves compute)."""

    def __init__(self, searcher: MatchedRateSearcher) -> None:
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.searcher.is_superseded(trial_id)

    def stop_all(self) -> bool:
        return False
