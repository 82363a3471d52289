"""The base of the matched-rate searchers: (cell, target) tasks, routing trials to them, the
ledger of trial records, ``FINISHED`` and save/restore (see :mod:`raysweep.tune.matched_rate`)."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any, Literal

from ray.tune.search import Searcher

from raysweep.config import set_dotted
from raysweep.tune.operating_points import (
    META_KEY,
    RATE_ERROR,
    OperatingPoint,
    TrialRecord,
    derive_operating_points,
    record_from_result,
)

GECO_TARGET_KEY = "objective.geco.target_rate"
LOG_BETA_LIMIT = 40.0  # beyond e^+-40 no VAE objective is meaningful: the task is out of reach
StoppedTrials = Literal["ignore", "rate_rises", "rate_falls"]

def cell_label(params: Mapping[str, Any]) -> str:
    """``"loss.lambda_neural=0.5,loss.neural=box_blur"`` (sorted keys), or ``"base"`` when empty."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params)) or "base"


def emit_config(assignments: Mapping[str, Any], key_style: Literal["nested", "dotted"]) -> dict[str, Any]:
    """Dotted assignments as a Tune config in the runner's convention (nested or flat dotted)."""
    if key_style == "dotted":
        return dict(assignments)
    out: dict[str, Any] = {}
    for key, value in assignments.items():
        set_dotted(out, key, value)
    return out



class MatchedRateSearcher(Searcher):
    """Shared machinery: (cell, target) tasks, routing trials to them, the ledger of trial
    records, ``FINISHED``, save/restore. Subclasses implement ``_propose`` and ``_observe``."""

    strategy = ""

    def __init__(self, cells: list[Mapping[str, Any]] | None, targets: list[float], tolerance: float = 0.05,
                 probes: int = 2, max_trials: int = 12, key_style: Literal["nested", "dotted"] = "nested") -> None:
        super().__init__(metric=RATE_ERROR, mode="min")
        cells = [dict(c) for c in (cells or [{}])]
        labels = [cell_label(c) for c in cells]
        if len(set(labels)) != len(labels):
            raise ValueError(f"duplicate cells: {labels}")
        self.cells = dict(zip(labels, cells, strict=True))
        self.tasks: list[tuple[str, float]] = [(lab, float(t)) for lab in labels for t in targets]
        self.tolerance, self.probes, self.max_trials, self.key_style = tolerance, probes, max_trials, key_style
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
            config = emit_config({**self.cells[cell], **assignments}, self.key_style)
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
