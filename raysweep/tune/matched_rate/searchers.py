"""The matched-rate searchers under Tune: one ``Searcher`` over every (cell, target) of a sweep per
strategy, and the stopper of superseded trials (see :mod:`raysweep.tune.matched_rate`).

- :class:`MatchedRateSearcher`: the shared machinery: (cell, target) tasks, routing trials to them,
  the ledger of :class:`~raysweep.tune.matched_rate.points.TrialRecord`, ``FINISHED`` and
  save/restore (its whole state is pickled with the experiment, so ``Tuner.restore`` continues it);
- :class:`BisectionSearcher` (one :class:`~raysweep.tune.matched_rate.bisection.BetaBracket` per task),
  :class:`OptunaRateSearcher` (one TPE study per task) and :class:`GecoSearcher` (one GECO run per task);
- :class:`SupersededTrialStopper`: stops the trials of a task another trial has already matched.

A task is a (cell, target, seed): a cell's ``train.seed`` (``search.seeds``) is split off its
label, so each seed gets its own operating point and its other seeds are its nearest neighbours.
With ``warm=True`` (the default) every converged trial feeds a
:class:`~raysweep.tune.matched_rate.warm.RatePredictor`, and a task's first trial waits for a
prediction: while no task has a converged trial, one task (the first cell at the first target and
seed) runs alone as the pilot; every later task starts from its neighbours' facts
(:meth:`MatchedRateSearcher.known_points` adds those of an earlier sweep, as ``raysweep extend``
does). So that there are facts to start from, at most ``active_tasks`` tasks search at once (a
task with a free probe slot goes before a new one), new tasks start seed-major, and a task waits
while the same cell and target at an earlier seed is still searching.

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

from raysweep.registry import MATCHED_RATE_STRATEGIES
from raysweep.tune.matched_rate.bisection import BetaBracket
from raysweep.tune.matched_rate.points import (
    BETA_KEY,
    GECO_TARGET_KEY,
    META_KEY,
    RATE_ERROR,
    SEED_KEY,
    OperatingPoint,
    TrialRecord,
    cell_label,
    derive_operating_points,
    record_from_result,
    within_tolerance,
)
from raysweep.tune.matched_rate.warm import Prediction, RatePredictor, Task
from raysweep.tune.sweep_config import MatchedRateSearch, StoppedTrials


class MatchedRateSearcher(Searcher):
    """Shared machinery: (cell, target) tasks, routing trials to them, the ledger of trial
    records, ``FINISHED``, save/restore. Subclasses implement ``_propose`` and ``_observe``.

    Args:
        cells: dotted overrides, one mapping per cell (None: one cell, the base config); a
            ``train.seed`` key makes the seed part of the task, not of the cell label.
        targets: rate targets R* (nats); every cell is searched at every target.
        tolerance: relative, ``|R / R* - 1| <= tolerance`` ends a task as matched.
        probes: trials in flight at once per (cell, target).
        max_trials: trials per (cell, target) before the task ends as exhausted.
        warm: start each task from its neighbours' facts (module docstring); False: every task cold.
        active_tasks: warm, the most tasks searching at once (cold: no limit).
    """

    strategy = ""

    @classmethod
    def from_search(cls, search: MatchedRateSearch, cells: list[Mapping[str, Any]] | None,
                    optuna_storage: Any = None) -> MatchedRateSearcher:
        """The strategy's searcher of a sweep's ``search.matched_rate`` block over `cells`
        (``optuna_storage``: where a strategy keeping Optuna studies keeps them; None: in memory)."""
        raise NotImplementedError

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 probes: int = 2, max_trials: int = 12, warm: bool = True, active_tasks: int = 2) -> None:
        super().__init__(metric=RATE_ERROR, mode="min")
        cells = [dict(c) for c in (cells or [{}])]
        seeds = [c.pop(SEED_KEY, None) for c in cells]
        labels = [cell_label(c) for c in cells]
        keys = list(zip(labels, seeds, strict=True))
        if len(set(keys)) != len(keys):
            raise ValueError(f"duplicate cells: {labels}")
        self.cells = dict(zip(labels, cells, strict=False))
        seed_order = list(dict.fromkeys(seeds))
        # seed-major: a later seed's tasks start from the earlier seeds' answers
        self.tasks: list[Task] = sorted(((lab, float(t), sd) for lab, sd in keys for t in targets),
                                        key=lambda k: seed_order.index(k[2]))
        self.tolerance, self.probes, self.max_trials, self.warm = tolerance, probes, max_trials, warm
        self.active_tasks = max(1, active_tasks)
        self.predictor = RatePredictor(tolerance)
        self.status = {task: "searching" for task in self.tasks}
        self.started = {task: 0 for task in self.tasks}
        self.live: dict[str, Task] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self.last_results: dict[str, dict[str, Any]] = {}
        self.records: list[TrialRecord] = []

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        """Accept the Tuner's metric/mode; the search space is the searcher's own."""
        self._metric, self._mode = metric or self._metric, mode or self._mode
        return True

    def _propose(self, task: Task, trial_id: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _observe(self, task: Task, trial_id: str, record: TrialRecord, result: dict[str, Any] | None) -> None:
        raise NotImplementedError

    def _start(self, task: Task, prediction: Prediction | None) -> None:
        """Before a task's first trial: take its prediction (None: cold). Default: nothing."""

    def known_points(self, points: list[OperatingPoint]) -> None:
        """Facts from an earlier sweep's operating points (``raysweep extend``): each converged point
        is a trial of its task at its beta, for the predictions of the tasks here."""
        for p in points:
            if p.trial_id is not None and math.isfinite(p.beta) and p.beta > 0:
                self.predictor.add(p.task, math.log(p.beta), p.rate)

    def _pilot_running(self) -> bool:
        """True while no task has a converged trial and some task is already searching."""
        return not self.predictor.facts and any(self.started[t] and self.status[t] == "searching" for t in self.tasks)

    def _may_start(self, task: Task) -> bool:
        """Warm: whether `task` may start now (module docstring: the limit on tasks searching at once,
        and the wait for the same cell and target at an earlier seed)."""
        if not self.warm:
            return True
        searching = [t for t in self.tasks if self.started[t] and self.status[t] == "searching"]
        if len(searching) >= self.active_tasks:
            return False
        earlier = self.tasks[:self.tasks.index(task)]
        return not any(t[:2] == task[:2] and t in searching for t in earlier)

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """A config for a task with a free probe slot: cold, the one with the fewest trials; warm, a
        task already searching before a new one (which may have to wait, module docstring)."""
        if all(s != "searching" for s in self.status.values()):
            return Searcher.FINISHED
        # warm: tasks already searching first (their facts feed the next ones); cold: fewest trials first
        order = (sorted(self.tasks, key=lambda t: self.started[t] == 0) if self.warm
                 else sorted(self.tasks, key=lambda t: self.started[t]))
        for task in order:
            if self.status[task] != "searching":
                continue
            if self.started[task] == 0 and not self._may_start(task):
                continue
            if self.started[task] == 0 and task not in self.predictor.predicted:
                prediction = self.predictor.predict(task) if self.warm else None
                if prediction is None and self.warm and self._pilot_running():
                    continue  # wait for the pilot's facts rather than search from scratch
                self._start(task, prediction)
            assignments = self._propose(task, trial_id)
            if assignments is None:
                continue
            cell, target, seed = task
            meta = {"cell": cell, "cell_params": self.cells[cell], "target": target, "strategy": self.strategy,
                    "seed": seed}
            config: dict[str, Any] = {**self.cells[cell], **({SEED_KEY: seed} if seed is not None else {}),
                                      **assignments}
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
        beta = record.final_beta if MATCHED_RATE_STRATEGIES[self.strategy].steers else record.beta
        if record.converged and beta > 0:
            self.predictor.add(task, math.log(beta), record.rate)
        self._observe(task, trial_id, record, result)
        if self.status[task] == "matched" and record.converged and within_tolerance(record.rate, task[1],
                                                                                       self.tolerance):
            self.predictor.matched(task, math.log(beta))

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


@MATCHED_RATE_STRATEGIES.builds("bisection")
class BisectionSearcher(MatchedRateSearcher):
    """Bisection on log beta per (cell, target), ``probes`` trials in flight each (see
    :class:`~raysweep.tune.matched_rate.bisection.BetaBracket`). ``stopped_trials`` says what an early-stopped trial proves:

    - ``"ignore"`` (default, always valid): nothing; it only counts as compute.
    - ``"rate_rises"``: assumes the rate never falls during training at fixed beta (measured for
      the tiny VAE on XYSquares with a cosine learning rate: it climbs to a plateau), so a last
      rate above R* proves the converged rate is above R*, i.e. beta is too small. A last rate below
      R* proves nothing.
    - ``"rate_falls"``: the converse assumption; a last rate below R* proves beta too large.

    Warm (the default), a task's bracket starts at its prediction
    (:meth:`~raysweep.tune.matched_rate.bisection.BetaBracket.warm_start`): centre and half-width
    from :class:`~raysweep.tune.matched_rate.warm.RatePredictor`, whose docstring says which
    neighbours' facts it uses and in what order; a prediction that misses falls back to the cold
    search.
    """

    strategy = "bisection"

    @classmethod
    def from_search(cls, search: MatchedRateSearch, cells: list[Mapping[str, Any]] | None,
                    optuna_storage: Any = None) -> MatchedRateSearcher:
        return cls(cells, list(search.targets), tolerance=search.tolerance, beta_min=search.beta_min,
                   beta_max=search.beta_max, probes=search.probes, max_trials=search.max_trials,
                   stopped_trials=search.stopped_trials, warm=search.warm)

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 beta_min: float = 0.01, beta_max: float = 10.0, probes: int = 2, max_trials: int = 12,
                 stopped_trials: StoppedTrials = "ignore", warm: bool = True) -> None:
        super().__init__(cells, targets, tolerance, probes, max_trials, warm)
        self.stopped_trials = stopped_trials
        self.brackets = {task: BetaBracket(task[1], tolerance, math.log(beta_min), math.log(beta_max), probes,
                                           max_trials) for task in self.tasks}
        self.trial_log_beta: dict[str, float] = {}

    def _start(self, task: Task, prediction: Prediction | None) -> None:
        if prediction is not None:
            self.brackets[task].warm_start(prediction.centre, prediction.half_width, prediction.slope)

    def _propose(self, task: Task, trial_id: str) -> dict[str, Any] | None:
        bracket = self.brackets[task]
        x = bracket.propose()
        self.status[task] = bracket.status
        if x is None:
            return None
        self.trial_log_beta[trial_id] = x
        return {BETA_KEY: math.exp(x)}

    def _observe(self, task: Task, trial_id: str, record: TrialRecord,
                 result: dict[str, Any] | None) -> None:
        bracket = self.brackets[task]
        rate = None if record.error else record.rate
        bracket.observe(self.trial_log_beta[trial_id], rate, record.converged, self.stopped_trials)
        self.status[task] = bracket.status


@MATCHED_RATE_STRATEGIES.builds("optuna")
class OptunaRateSearcher(MatchedRateSearcher):
    """One ``ray.tune.search.optuna.OptunaSearch`` (TPE over log beta, minimising ``rate_error``)
    per (cell, target). A trial stopped early (by ASHA) is told to Optuna as PRUNED at its last
    ``rate_error``, not as a finished value. A task ends when a converged trial is within
    ``tolerance`` or after ``max_trials``. ``storage``: an Optuna storage (e.g. RDB) for the
    studies, named ``matched_rate:<cell>:<target>`` (``:seed=<seed>`` with ``search.seeds``), so
    optuna-dashboard can open them.

    Warm (the default), each study is made when its task starts, from the task's prediction
    (:class:`~raysweep.tune.matched_rate.warm.RatePredictor`): its first trials are enqueued
    (``study.enqueue_trial``) at the predicted beta, then half a half-width below and above it,
    then a whole one; and what the sweep knows is shared as the prior range of log beta, the
    prediction +- ``PRIOR_WIDTHS`` half-widths (at least +-``MIN_PRIOR`` in log beta) within
    [beta_min, beta_max]. Until a warm task has a converged trial it runs one trial at a time.
    """

    strategy = "optuna"
    PRIOR_WIDTHS = 3.0
    MIN_PRIOR = 0.5  # log beta
    ENQUEUED = (0.0, -0.5, 0.5, -1.0, 1.0)  # offsets of the enqueued trials, in half-widths

    @classmethod
    def from_search(cls, search: MatchedRateSearch, cells: list[Mapping[str, Any]] | None,
                    optuna_storage: Any = None) -> MatchedRateSearcher:
        return cls(cells, list(search.targets), tolerance=search.tolerance, beta_min=search.beta_min,
                   beta_max=search.beta_max, probes=search.probes, max_trials=search.max_trials,
                   startup_trials=search.optuna_startup_trials, seed=search.seed, storage=optuna_storage,
                   warm=search.warm)

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 beta_min: float = 0.01, beta_max: float = 10.0, probes: int = 2, max_trials: int = 12,
                 startup_trials: int = 4, seed: int = 0, storage: Any = None, warm: bool = True) -> None:
        from ray.tune.search.optuna import OptunaSearch

        super().__init__(cells, targets, tolerance, probes, max_trials, warm)
        self.beta_min, self.beta_max, self.startup_trials, self.seed = beta_min, beta_max, startup_trials, seed
        self.storage = storage
        self.studies: dict[Task, OptunaSearch] = {}
        self.enqueued: dict[Task, list[float]] = {}  # betas enqueued per task, for the record

    def _start(self, task: Task, prediction: Prediction | None) -> None:
        if task in self.studies:
            return
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        low, high = math.log(self.beta_min), math.log(self.beta_max)
        if prediction is not None:
            reach = max(self.PRIOR_WIDTHS * prediction.half_width, self.MIN_PRIOR)
            low, high = max(low, prediction.centre - reach), min(high, prediction.centre + reach)
            if high - low < 1e-3:  # the prediction lies outside [beta_min, beta_max]: the full range
                low, high = math.log(self.beta_min), math.log(self.beta_max)
        betas: list[float] = []
        if prediction is not None:
            betas = list(dict.fromkeys(math.exp(min(max(prediction.centre + o * prediction.half_width, low), high))
                                       for o in self.ENQUEUED))
            self.enqueued[task] = betas
        sampler = optuna.samplers.TPESampler(seed=self.seed + self.tasks.index(task), n_startup_trials=self.startup_trials)
        space = {"beta": optuna.distributions.FloatDistribution(math.exp(low), math.exp(high), log=True)}
        name = f"matched_rate:{task[0]}:{task[1]:g}" + ("" if task[2] is None else f":seed={task[2]}")
        # points_to_evaluate: OptunaSearch hands each to study.enqueue_trial, so they are its first trials
        self.studies[task] = OptunaSearch(space, metric=RATE_ERROR, mode="min", sampler=sampler, study_name=name,
                                          storage=self.storage, points_to_evaluate=[{"beta": b} for b in betas] or None)

    def _propose(self, task: Task, trial_id: str) -> dict[str, Any] | None:
        self._start(task, None)
        in_flight = sum(1 for t in self.live.values() if t == task)
        converged = any(r.task == task and r.converged for r in self.records)
        probes = 1 if task in self.enqueued and not converged else self.probes
        if in_flight >= probes or self.started[task] >= self.max_trials:
            return None
        return {BETA_KEY: float(self.studies[task].suggest(trial_id)["beta"])}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        super().on_trial_result(trial_id, result)
        task = self.live.get(trial_id)
        if task is not None and RATE_ERROR in result:
            self.studies[task].on_trial_result(trial_id, result)

    def _observe(self, task: Task, trial_id: str, record: TrialRecord,
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


@MATCHED_RATE_STRATEGIES.builds("geco")
class GecoSearcher(MatchedRateSearcher):
    """One GECO run per (cell, target): ``objective.geco.target_rate = target``, beta starting at the
    base config's ``objective.beta``. ``max_trials`` > 1 retries a task whose run failed."""

    strategy = "geco"

    @classmethod
    def from_search(cls, search: MatchedRateSearch, cells: list[Mapping[str, Any]] | None,
                    optuna_storage: Any = None) -> MatchedRateSearcher:
        return cls(cells, list(search.targets), tolerance=search.tolerance, max_trials=1)

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 max_trials: int = 1) -> None:
        super().__init__(cells, targets, tolerance, 1, max_trials, warm=False)  # a GECO run needs no beta

    def _propose(self, task: Task, trial_id: str) -> dict[str, Any] | None:
        if any(t == task for t in self.live.values()) or self.started[task] >= self.max_trials:
            return None
        return {GECO_TARGET_KEY: task[1]}

    def _observe(self, task: Task, trial_id: str, record: TrialRecord,
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
