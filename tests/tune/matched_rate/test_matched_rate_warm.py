"""Warm starts of the matched-rate search, without a Ray cluster: the predictor's sources and their
order, the bracket's warm start from a neighbour's facts and its fallback when the prediction
misses, Optuna's enqueued trials and prior range, per-seed tasks, and what warm starts save on the
toy model (searchers driven by hand, as Tune calls them)."""

from __future__ import annotations

import math

import pytest

from raysweep.toy import toy_rate
from raysweep.tune import ray_shim
from raysweep.tune.matched_rate.bisection import BetaBracket
from raysweep.tune.matched_rate.points import (
    META_KEY,
    PROGRESS,
    RATE_ERROR,
    SEED_KEY,
    OperatingPoint,
    get_dotted,
    merge_operating_points,
    rate_error,
    read_operating_points,
    write_operating_points,
)
from raysweep.tune.matched_rate.searchers import BisectionSearcher, OptunaRateSearcher
from raysweep.tune.matched_rate.warm import PRIOR_HALF_WIDTH, RatePredictor

LOG_FLOOR, LOG_CEIL = math.log(0.01), math.log(10.0)


def _cell_rate(beta: float, meta: dict) -> float:
    """The toy's rate, shifted per cell (lambda) and per seed: neighbours differ a little."""
    lam = meta["cell_params"].get("loss.lambda_neural", 0.0)
    return toy_rate(beta * (1.0 + 0.3 * lam) * (1.0 + 0.03 * (meta.get("seed") or 0)))


def _drive(searcher, rate_fn=_cell_rate) -> list[dict]:
    """Suggest until the searcher waits, complete the oldest trial, repeat; the configs suggested."""
    live, suggested, i = [], [], 0
    while True:
        while (config := searcher.suggest(f"t{i}")) not in (None, "FINISHED"):
            live.append((f"t{i}", config))
            suggested.append(config)
            i += 1
        if not live:
            return suggested
        trial_id, config = live.pop(0)
        beta, target = get_dotted(config, "objective.beta"), config[META_KEY]["target"]
        rate = rate_fn(beta, config[META_KEY])
        searcher.on_trial_complete(trial_id, {"rate": rate, "epoch": 8.0, "beta": beta, PROGRESS: 1.0,
                                              RATE_ERROR: rate_error(rate, target), "training_iteration": 8})


def _answer(target: float) -> float:
    """The toy's log beta at `target` nats, by bisection on its exact rate."""
    lo, hi = LOG_FLOOR - 5, LOG_CEIL + 5
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if toy_rate(math.exp(mid)) > target else (lo, mid)
    return 0.5 * (lo + hi)


# ----------------------------------------------------------------------------------- predictor
def test_prediction_sources_in_order() -> None:
    task = ("lam=0.5", 10.0, 1)
    near = _answer(10.0)
    predictor = RatePredictor(0.05)
    assert predictor.predict(task) is None  # nothing known: cold
    predictor.add(("lam=0.0", 20.0, 0), _answer(20.0), 20.0)  # another cell, another target
    assert predictor.predict(task).source == "any"
    predictor.add(("lam=0.0", 10.0, 0), near + 0.1, toy_rate(math.exp(near + 0.1)))  # another cell, same target
    assert predictor.predict(task).source == "lambda"
    predictor.add(("lam=0.5", 5.0, 0), _answer(5.0), 5.0)  # same cell, another target
    assert predictor.predict(task).source == "target"
    predictor.add(("lam=0.5", 10.0, 0), near, 10.0)  # same cell and target, another seed
    pred = predictor.predict(task)
    assert pred.source == "seed" and pred.centre == pytest.approx(near) and pred.slope < 0
    assert pred.half_width == pytest.approx(PRIOR_HALF_WIDTH["seed"])
    # the measured error of a source sets its next half-width: twice the largest error so far
    predictor.matched(task, near + 0.4)
    assert predictor.predict(("lam=0.5", 10.0, 2)).half_width == pytest.approx(0.8)


# ------------------------------------------------------------------------------------- bracket
def _run(bracket: BetaBracket, rate_fn=toy_rate) -> list[float]:
    probes = []
    while bracket.status == "searching" and (x := bracket.propose()) is not None:
        probes.append(x)
        bracket.observe(x, rate_fn(math.exp(x)), converged=True)
    return probes


def test_bracket_warm_start_from_a_neighbours_facts() -> None:
    # the same cell and target at seed 0 matched; seed 1's rate is 3% off in beta
    predictor = RatePredictor(0.05)
    for x in (_answer(10.0) - 0.3, _answer(10.0) + 0.01):
        predictor.add(("c", 10.0, 0), x, toy_rate(math.exp(x)))
    pred = predictor.predict(("c", 10.0, 1))
    assert pred.source == "seed"
    seed1 = lambda beta: toy_rate(beta * 1.03)  # noqa: E731
    warm = BetaBracket(10.0, 0.05, LOG_FLOOR, LOG_CEIL, probes=2, max_trials=12)
    warm.warm_start(pred.centre, pred.half_width, pred.slope)
    first = warm.propose()
    assert first == pytest.approx(pred.centre) and warm.propose() is None  # one warm probe at a time
    warm.observe(first, seed1(math.exp(first)), converged=True)
    probes = [first, *_run(warm, seed1)]
    cold = BetaBracket(10.0, 0.05, LOG_FLOOR, LOG_CEIL, probes=1, max_trials=12)
    cold_probes = _run(cold, seed1)
    assert warm.status == cold.status == "matched" and warm.warm_outcome in ("warm", "bracketed")
    assert len(probes) <= 2 < len(cold_probes)
    assert all(abs(x - pred.centre) <= pred.half_width for x in probes)  # it stayed in the warm bracket


def test_bracket_falls_back_to_the_cold_search_when_the_prediction_misses() -> None:
    truth = _answer(10.0)
    bracket = BetaBracket(10.0, 0.05, LOG_FLOOR, LOG_CEIL, probes=1, max_trials=20)
    bracket.warm_start(truth + 3.0, 0.2, -0.7)  # a prediction far off, and sure of itself
    x = bracket.propose()
    assert x == pytest.approx(truth + 3.0)
    bracket.observe(x, toy_rate(math.exp(x)), converged=True)
    following = bracket.propose()
    assert bracket.warm_outcome == "missed" and bracket.warm is None
    # from here it is today's search: the same proposal as a cold bracket with the same fact
    cold = BetaBracket(10.0, 0.05, LOG_FLOOR, LOG_CEIL, probes=1, max_trials=20)
    cold.started, cold.pending = 1, [x]
    cold.observe(x, toy_rate(math.exp(x)), converged=True)
    assert following == pytest.approx(cold.propose())
    bracket.observe(following, toy_rate(math.exp(following)), converged=True)
    _run(bracket)
    assert bracket.status == "matched"
    # a centre trial that proved nothing (it failed) is a miss too
    failed = BetaBracket(10.0, 0.05, LOG_FLOOR, LOG_CEIL, probes=2)
    failed.warm_start(truth, 0.2, -0.7)
    failed.observe(failed.propose(), None, converged=False)
    assert failed.propose() is not None and failed.warm_outcome == "missed"


# ----------------------------------------------------------------------------------- searchers
def test_optuna_enqueues_the_predicted_betas_first() -> None:
    truth = _answer(10.0)
    known = [OperatingPoint(cell="base", target_rate=10.0, beta=math.exp(truth), rate=10.0, relative_error=0.0,
                            within_tolerance=True, distortion_sse=1.0, anisotropy=0.1, trials=3, epochs=24.0,
                            strategy="optuna", trial_id="old", seed=0)]
    searcher = OptunaRateSearcher([{SEED_KEY: 1}], [10.0], beta_min=0.01, beta_max=10.0, probes=2, max_trials=5,
                                  startup_trials=2)
    searcher.known_points(known)
    # a rate that never matches, so that every enqueued trial is asked for, one at a time (no
    # converged trial yet... then two at a time)
    suggested = _drive(searcher, rate_fn=lambda beta, meta: 100.0)
    task = ("base", 10.0, 1)
    enqueued = searcher.enqueued[task]
    assert len(enqueued) == 5 and enqueued[0] == pytest.approx(math.exp(truth))
    assert [c["objective.beta"] for c in suggested] == pytest.approx(enqueued)
    assert all(c[META_KEY]["seed"] == 1 and c[SEED_KEY] == 1 for c in suggested)
    study, _ = ray_shim.optuna_search_study(searcher.studies[task])
    assert study.study_name == "matched_rate:base:10:seed=1"
    (dist,) = study.trials[0].distributions.values()
    # the prior range: the prediction +- 3 half-widths, inside [beta_min, beta_max]
    assert 0.01 < dist.low < math.exp(truth) < dist.high < 10.0


def test_warm_search_costs_less_and_gives_one_point_per_seed() -> None:
    cells = [{"loss.lambda_neural": lam, SEED_KEY: seed} for lam in (0.0, 0.5, 0.9) for seed in (0, 1, 2)]
    trials = {}
    for warm in (False, True):
        searcher = BisectionSearcher(cells, [8.0, 14.0], probes=2, max_trials=16, warm=warm)
        _drive(searcher)
        points = searcher.operating_points()
        assert len(points) == 18 and all(p.within_tolerance for p in points)
        assert sorted({p.seed for p in points}) == [0, 1, 2] and {p.cell for p in points} == {
            "loss.lambda_neural=0.0", "loss.lambda_neural=0.5", "loss.lambda_neural=0.9"}
        trials[warm] = sum(p.trials for p in points)
    assert trials[True] <= 0.5 * trials[False], trials
    # after the first seed, the warm search needs little more than one trial per point
    later = [p.trials for p in points if p.seed != 0]
    assert sum(later) <= 1.5 * len(later), later


def test_operating_point_rows_say_the_seed_and_merge(tmp_path) -> None:
    def point(seed: int | None, beta: float) -> OperatingPoint:
        return OperatingPoint(cell="loss.lambda_neural=0.5", target_rate=8.0, beta=beta, rate=8.1,
                              relative_error=0.0125, within_tolerance=True, distortion_sse=math.nan, anisotropy=0.2,
                              trials=2, epochs=10.0, strategy="bisection", trial_id=f"t{seed}",
                              cell_params={"loss.lambda_neural": 0.5}, seed=seed)

    first = [point(1, 0.1), point(0, 0.2)]
    assert list(first[0].row())[:3] == ["cell", "target_rate", "seed"]
    files = write_operating_points(first, tmp_path)
    back = read_operating_points(files["json"].read_text())
    assert [(p.seed, p.beta, p.cell_params) for p in back] == [(1, 0.1, {"loss.lambda_neural": 0.5}),
                                                               (0, 0.2, {"loss.lambda_neural": 0.5})]
    assert math.isnan(back[0].distortion_sse) and read_operating_points(None) == []
    merged = merge_operating_points(back, [point(2, 0.3), point(0, 0.25)])
    assert [(p.seed, p.beta) for p in merged] == [(0, 0.25), (1, 0.1), (2, 0.3)]
