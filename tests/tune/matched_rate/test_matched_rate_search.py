"""Matched-rate search without a Ray cluster: the bisection bracket on the exact toy model, the
searchers driven by hand (suggest / on_trial_complete, as Tune calls them), save/restore, the
search block's validation, and the operating-point table."""

from __future__ import annotations

import csv
import json
import math
import random
import sys
from pathlib import Path

import pytest

from raysweep.config import validate_model
from raysweep.errors import RaysweepError
from raysweep.toy import beta_for_rate, metric_weights, toy_rate
from raysweep.tune import ray_shim
from raysweep.tune.matched_rate.bisection import BetaBracket
from raysweep.tune.matched_rate.plan import build_matched_rate_plan
from raysweep.tune.matched_rate.points import (
    GECO_TARGET_KEY,
    META_KEY,
    PROGRESS,
    RATE_ERROR,
    cell_label,
    derive_operating_points,
    get_dotted,
    matched_rate_report,
    rate_error,
    split_trial_config,
    write_operating_points,
)
from raysweep.tune.matched_rate.searchers import BisectionSearcher, GecoSearcher, OptunaRateSearcher
from raysweep.tune.sweep_config import MatchedRateSearch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tune: tune_helpers
from tune_helpers import asha_stop_iteration  # noqa: E402

TOY_TARGETS = [0.5, 1.0, 2.0, 5.0, 10.0, 17.25, 25.0, 40.0, 60.0, 90.0]  # nats; the toy's V(0.01) ~ 70


def _run_bracket(target: float, probes: int, seed: int, rate_fn=toy_rate, log_floor: float = math.log(0.01),
                 log_ceil: float = math.log(10.0), max_trials: int = 30) -> BetaBracket:
    """Drive one bracket asynchronously: trials in flight finish in a random order."""
    rng = random.Random(seed)
    bracket = BetaBracket(target, 0.05, log_floor, log_ceil, probes, max_trials)
    flight: list[float] = []
    while bracket.status == "searching":
        while (x := bracket.propose()) is not None:
            flight.append(x)
        if not flight:
            break
        x = flight.pop(rng.randrange(len(flight)))
        bracket.observe(x, rate_fn(math.exp(x)), converged=True)
    return bracket


@pytest.mark.parametrize("probes", [1, 2, 3])
def test_bracket_matches_every_toy_target(probes: int) -> None:
    for target in TOY_TARGETS:
        for seed in range(3):
            bracket = _run_bracket(target, probes, seed)
            assert bracket.status == "matched", (target, probes, seed, bracket)
            best = min(bracket.observed, key=lambda p: abs(math.log(p[1] / target)))
            assert abs(best[1] / target - 1) <= 0.05
            # the beta found is the toy's exact answer to within the rate tolerance
            exact = beta_for_rate(metric_weights("ramped"), best[1])
            assert math.exp(best[0]) == pytest.approx(exact, rel=1e-9)
            assert bracket.started <= 6 * probes + 4, (target, probes, bracket.started)


def test_sequential_bisection_is_cheap_on_the_toy() -> None:
    trials = [_run_bracket(t, 1, 0).started for t in TOY_TARGETS]
    assert max(trials) <= 8 and sum(trials) / len(trials) <= 5, trials


def test_bracket_expands_when_the_target_is_outside_the_initial_bracket() -> None:
    # beta* for 0.5 nats is ~75, for 90 nats ~1e-3: both outside [1, 2]
    for target in (0.5, 90.0):
        bracket = _run_bracket(target, 2, 0, log_floor=0.0, log_ceil=math.log(2.0))
        assert bracket.status == "matched" and bracket.expansions >= 1


def test_unreachable_target_ends_exhausted() -> None:
    bracket = _run_bracket(1.0, 2, 0, rate_fn=lambda beta: 5.0, max_trials=100)
    assert bracket.status == "exhausted" and bracket.started < 100
    bracket = _run_bracket(1.0, 2, 0, max_trials=3)  # out of trials
    assert bracket.status == "exhausted" and bracket.started == 3


def test_noisy_non_monotone_observations_keep_searching_inside_the_ambiguous_span() -> None:
    bracket = BetaBracket(10.0, 0.01, math.log(0.01), math.log(10.0), probes=1)
    bracket.observe(bracket.propose(), 12.0, True)  # x = mid, rate above target: lo = mid
    bracket.pending.append(-3.0)
    bracket.observe(-3.0, 8.0, True)  # a smaller beta with a rate below target: contradiction
    x = bracket.propose()
    assert -3.0 < x < bracket.observed[0][0]


def test_stopped_trials_give_bounds_only_when_the_assumption_allows() -> None:
    for mode, rate, small, large in [("ignore", 30.0, [], []), ("rate_rises", 30.0, [1.0], []),
                                     ("rate_rises", 3.0, [], []), ("rate_falls", 3.0, [], [1.0]),
                                     ("rate_falls", 30.0, [], [])]:
        bracket = BetaBracket(10.0, 0.05, -4.0, 4.0, probes=1)
        bracket.pending.append(1.0)
        bracket.observe(1.0, rate, converged=False, stopped_trials=mode)
        assert (bracket.too_small, bracket.too_large, bracket.observed) == (small, large, [])
    # a "too small" bound moves the lower end of the bracket
    bracket = BetaBracket(10.0, 0.05, -4.0, 4.0, probes=1)
    bracket.pending.append(1.0)
    bracket.observe(1.0, 30.0, converged=False, stopped_trials="rate_rises")
    assert bracket.bounds()[0] == (1.0, None) and bracket.propose() > 1.0


# ---------------------------------------------------------------------------- searchers by hand
def _complete(searcher, trial_id: str, config: dict, epochs: int = 8, rate_fn=toy_rate,
              converged: bool = True) -> None:
    beta = get_dotted(config, "objective.beta")
    target = config[META_KEY]["target"]
    rate = rate_fn(beta)
    searcher.on_trial_complete(trial_id, {
        "rate": rate, "epoch": float(epochs if converged else 2), "beta": beta, "distortion_sse": 1.0,
        "anisotropy": 0.5, PROGRESS: 1.0 if converged else 0.25, RATE_ERROR: rate_error(rate, target),
        "training_iteration": epochs if converged else 2})


def _drive(searcher, steps: int | None = None, start: int = 0) -> list[tuple[str, dict]]:
    """Ask for configs until the searcher waits, complete the oldest, repeat (``steps`` rounds)."""
    suggested, live, i, rounds = [], [], start, 0
    while steps is None or rounds < steps:
        while True:
            config = searcher.suggest(f"t{i}")
            if config is None or config == "FINISHED":
                break
            live.append((f"t{i}", config))
            suggested.append((f"t{i}", config))
            i += 1
        if not live:
            break
        trial_id, config = live.pop(0)
        _complete(searcher, trial_id, config)
        rounds += 1
    return suggested


def test_bisection_searcher_emits_dotted_configs_and_finishes() -> None:
    cells = [{"loss.lambda_neural": 0.0}, {"loss.lambda_neural": 0.5, "loss.neural": "box_blur"}]
    config = BisectionSearcher(cells, [5.0, 17.25], probes=2).suggest("a")
    # flat dotted keys, the sweep runner's convention: Tune's merge overrides exactly these keys
    assert set(config) == {"loss.lambda_neural", "objective.beta", META_KEY} and config["objective.beta"] > 0
    assert config[META_KEY] == {"cell": "loss.lambda_neural=0.0", "cell_params": cells[0], "target": 5.0,
                                "strategy": "bisection", "seed": None}

    searcher = BisectionSearcher(cells, [5.0, 17.25], probes=2)
    _drive(searcher)
    assert searcher.suggest("last") == "FINISHED"
    points = searcher.operating_points()
    assert len(points) == 4 and all(p.within_tolerance for p in points)
    assert {p.cell for p in points} == {cell_label(c) for c in cells}
    assert all(p.trials >= 1 and p.epochs == 8 * p.trials for p in points)


def test_searcher_save_restore_round_trip(tmp_path) -> None:
    def make() -> BisectionSearcher:
        return BisectionSearcher([{}], [5.0, 17.25, 40.0], probes=2)

    whole = make()
    first = _drive(whole, steps=3)
    whole.save_to_dir(str(tmp_path), "default")  # what Tune calls at each experiment checkpoint
    restored = make()
    restored.restore_from_dir(str(tmp_path))
    assert restored.live == whole.live and restored.started == whole.started

    # the restored searcher hears back from the trials in flight at save time and carries on exactly
    # as the uninterrupted one does
    pending = [(tid, cfg) for tid, cfg in first if tid in whole.live]
    for searcher in (whole, restored):
        for tid, cfg in pending:
            _complete(searcher, tid, cfg)
    rest_whole, rest_restored = _drive(whole, start=100), _drive(restored, start=100)
    assert rest_whole == rest_restored
    assert [p.trials for p in whole.operating_points()] == [p.trials for p in restored.operating_points()]
    assert all(p.within_tolerance for p in restored.operating_points())


def test_optuna_searcher_save_restore_and_pruned_trials(tmp_path) -> None:
    def make() -> OptunaRateSearcher:
        return OptunaRateSearcher([{}], [17.25], probes=1, max_trials=6, startup_trials=2, seed=3)

    whole = make()
    _drive(whole, steps=2)
    # a trial stopped early by ASHA: told to Optuna as pruned, counted as compute, never "converged"
    config = whole.suggest("stopped")
    _complete(whole, "stopped", config, converged=False)
    study, _ = ray_shim.optuna_search_study(whole.studies[("base", 17.25, None)])
    assert [t.state.name for t in study.trials].count("PRUNED") == 1
    whole.save(str(tmp_path / "s.pkl"))
    restored = make()
    restored.restore(str(tmp_path / "s.pkl"))
    assert _drive(whole, start=50) == _drive(restored, start=50)


def geco_configs(cells: list[dict], targets: list[float]) -> list[dict]:
    """The GECO strategy written out by hand: one trial per cell x target, its target rate set."""
    return [{**cell, GECO_TARGET_KEY: float(target),
             META_KEY: {"cell": cell_label(cell), "cell_params": cell, "target": float(target), "strategy": "geco",
                       "seed": None}}
            for cell in cells for target in targets]


def test_geco_strategy_one_run_per_cell_and_target() -> None:
    cells = [{"loss.lambda_neural": 0.0}, {"loss.lambda_neural": 0.5}]
    searcher = GecoSearcher(cells, [5.0, 10.0])
    got = [searcher.suggest(f"g{i}") for i in range(5)]
    assert got[:4] == geco_configs(cells, [5.0, 10.0])
    assert [c[GECO_TARGET_KEY] for c in got[:4]] == [5.0, 10.0, 5.0, 10.0]
    assert got[4] is None  # all four running: wait
    for i, config in enumerate(got[:4]):
        searcher.on_trial_complete(f"g{i}", {"rate": config[META_KEY]["target"] * 1.02, "epoch": 20.0,
                                             "beta": 0.7, PROGRESS: 1.0})
    assert searcher.suggest("g5") == "FINISHED"
    points = searcher.operating_points()
    assert all(p.within_tolerance and p.beta == 0.7 and p.trials == 1 for p in points)


# ------------------------------------------------------------------------------- config block
def test_search_block_validation_names_the_field() -> None:
    ok = validate_model(MatchedRateSearch, {"mode": "matched_rate", "targets": [5, 10]}, prefix="search.")
    assert ok.tolerance == 0.05 and ok.strategy == "bisection" and not ok.uses_asha
    assert validate_model(MatchedRateSearch, {"targets": [5], "strategy": "optuna"}).uses_asha
    for raw, key in [({"targets": []}, "search.targets"), ({"targets": [-1.0]}, "search.targets"),
                     ({"targets": [5], "strategy": "grid"}, "search.strategy"),
                     ({"targets": [5], "tolerance": 0}, "search.tolerance"),
                     ({"targets": [5], "beta_min": 10, "beta_max": 1}, "search.matched_rate.beta_min"),
                     ({"targets": [5], "bogus": 1}, "search.bogus")]:
        with pytest.raises(RaysweepError, match=key.replace(".", r"\.")):
            validate_model(MatchedRateSearch, raw, prefix="search.")


def test_plan_pieces() -> None:
    search = MatchedRateSearch(targets=[5.0], strategy="optuna", grace_period=2)
    plan = build_matched_rate_plan(search, [{"loss.lambda_neural": 0.5}], reports_per_trial=6)
    assert type(plan.searcher).__name__ == "OptunaRateSearcher" and plan.scheduler is not None
    assert asha_stop_iteration(plan.scheduler, plan.metric, plan.mode) == 6 and plan.metric == RATE_ERROR and plan.mode == "min"
    assert build_matched_rate_plan(MatchedRateSearch(targets=[5.0]), None, 6).scheduler is None


# ---------------------------------------------------------------------------- operating points
def test_report_wrapper_adds_rate_error_and_progress(make_trial) -> None:
    cfg = make_trial(["train.max_steps=30", "train.val_every=10"])
    seen: list[dict] = []
    report = matched_rate_report(lambda m, c: seen.append(m), 10.0, cfg=cfg)
    steps_per_epoch = 12  # 192 training images / batch 16
    for step in (10, 20, 30):
        report({"rate": 12.0, "step": step, "epoch": step / steps_per_epoch}, None)
    assert [m[PROGRESS] for m in seen] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert seen[0][RATE_ERROR] == pytest.approx(math.log(1.2))
    assert rate_error(0.0, 5.0) < math.inf  # a collapsed posterior still gives a finite error
    trial, meta = split_trial_config({"objective": {"beta": 1.0}, META_KEY: {"target": 3.0}})
    assert trial == {"objective": {"beta": 1.0}} and meta == {"target": 3.0}


def test_operating_points_from_plain_results_count_every_trial(tmp_path) -> None:
    meta = {"cell": "loss.lambda_neural=0.5", "cell_params": {"loss.lambda_neural": 0.5}, "target": 10.0,
            "strategy": "bisection"}

    def result(tid: str, beta: float, rate: float, epoch: float, progress: float, error: bool = False) -> dict:
        return {"trial_id": tid, "config": {"objective": {"beta": beta}, META_KEY: meta}, "error": error,
                "metrics": {"rate": rate, "epoch": epoch, PROGRESS: progress, "distortion_sse": 70.0,
                            "anisotropy": 0.3, "beta": beta}}

    results = [result("a", 0.1, 15.0, 25, 1.0), result("b", 1.0, 6.0, 25, 1.0),
               result("c", 0.5, 9.8, 8, 0.33),  # stopped early: closest rate, but not converged
               result("d", 0.4, 10.3, 25, 1.0), result("e", 0.45, math.nan, 3, 0.1, error=True),
               {"config": {"objective": {"beta": 1.0}}, "metrics": {"rate": 1.0}}]  # not matched-rate
    (point,) = derive_operating_points(results, tolerance=0.05)
    assert (point.trial_id, point.beta, point.rate, point.trials, point.epochs) == ("d", 0.4, 10.3, 5, 86.0)
    assert point.within_tolerance and point.relative_error == pytest.approx(0.03)
    paths = write_operating_points([point], tmp_path)
    rows = list(csv.DictReader(open(paths["csv"])))
    assert rows[0]["loss.lambda_neural"] == "0.5" and float(rows[0]["target_rate"]) == 10.0
    assert json.loads(paths["json"].read_text())[0]["trials"] == 5
