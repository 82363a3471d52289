"""The sweep's searcher and scheduler, driven directly (no Ray cluster needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from tune_helpers import asha_stop_iteration, tiny_sweep

from raysweep.errors import RaysweepError
from raysweep.tune.load import sweep_from_dict
from raysweep.tune.modes import search_mode
from raysweep.tune.search import CellSearcher, build_scheduler
from raysweep.tune.space import CELL_KEY, expand_sweep


def _searcher(search: dict, max_concurrent: int = 100, **kwargs) -> CellSearcher:
    sweep = sweep_from_dict(tiny_sweep(search=search))
    searcher_class = search_mode(sweep).searcher_class()  # the mode's own searcher
    return searcher_class(expand_sweep(sweep), max_concurrent=max_concurrent, optuna=sweep.search.optuna, **kwargs)


def test_grid_hands_out_every_cell_once_within_the_cap() -> None:
    searcher = _searcher({"grid": {"objective.beta": [0.5, 1.0, 2.0]}}, max_concurrent=2)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert searcher.suggest("c") is None  # two in flight: the cap holds the third back
    assert [first[CELL_KEY], second[CELL_KEY]] == [0, 1] and first["objective.beta"] == 0.5
    searcher.on_trial_complete("a", {"psnr": 10.0})
    third = searcher.suggest("c")
    assert third["objective.beta"] == 2.0
    searcher.on_trial_complete("b")
    searcher.on_trial_complete("c")
    assert searcher.suggest("d") == Searcher.FINISHED


def test_random_draws_are_reproducible_and_in_bounds() -> None:
    search = {"mode": "random", "grid": {"objective.beta": [0.5, 2.0]}, "num_samples": 3,
              "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}, "loss.balancer": {"choice": [True, False]}}}
    first, second = _searcher(search, random_seed=7), _searcher(search, random_seed=7)
    draws = [first.suggest(str(i)) for i in range(6)]
    assert draws == [second.suggest(str(i)) for i in range(6)]
    assert first.suggest("7") == Searcher.FINISHED
    assert [d[CELL_KEY] for d in draws] == [0, 1, 0, 1, 0, 1]  # round robin over the cells
    assert all(1e-4 <= d["train.lr"] <= 1e-2 and d["loss.balancer"] in (True, False) for d in draws)


def test_optuna_orphans_are_failed_on_restore(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path}/optuna.db"
    search = {"mode": "optuna", "num_samples": 3, "distributions": {"train.lr": {"loguniform": [1e-4, 1e-2]}},
              "optuna": {"metric": "psnr", "mode": "max"}}
    searcher = _searcher(search, optuna_storage=storage, study_prefix="s")
    assert 1e-4 <= searcher.suggest("a")["train.lr"] <= 1e-2
    searcher.save(str(tmp_path / "state.pkl"))
    searcher.suggest("b")  # asked after the save: the sweep dies before recording it
    restored = _searcher(search, optuna_storage=storage, study_prefix="s")
    restored.restore(str(tmp_path / "state.pkl"))
    restored.on_trial_complete("a", {"psnr": 12.5})
    [study] = optuna.get_all_study_summaries(storage)
    states = [t.state for t in optuna.load_study(study_name=study.study_name, storage=storage).trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]


def test_asha_max_t_leaves_the_last_validation_alone() -> None:
    sweep = sweep_from_dict(tiny_sweep(search={"scheduler": {"type": "asha", "metric": "psnr", "mode": "max"}}))
    scheduler = build_scheduler(sweep.search, expand_sweep(sweep))
    assert isinstance(scheduler, ASHAScheduler)
    # Two validations per trial (20 steps, one every 10): ASHA lets the second, the last, through
    # and would stop a trial only at a third report, which never comes.
    assert asha_stop_iteration(scheduler) == 20 // 10 + 1
    raw = tiny_sweep(search={"scheduler": {"type": "asha", "metric": "psnr", "mode": "max"}})
    raw["trial"]["train"] = {"epochs": 1, "val_every": 10}
    sweep = sweep_from_dict(raw)
    with pytest.raises(RaysweepError, match="search.scheduler.max_t: cannot infer"):
        build_scheduler(sweep.search, expand_sweep(sweep))
