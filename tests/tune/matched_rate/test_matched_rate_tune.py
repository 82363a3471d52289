"""Matched-rate searchers under real Ray Tune on CPU: the exact toy trainable (bisection, optuna
with ASHA, a sweep interrupted and resumed with ``Tuner.restore``) and the real tiny VAE trainer."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import pytest
import ray
from matched_rate_trainables import TOY_RAMP, toy_trainable, train_trainable, worker_pythonpath
from ray import tune
from ray.tune.stopper import CombinedStopper, Stopper

from raysweep.toy import toy_rate
from raysweep.tune.matched_rate.plan import build_matched_rate_plan
from raysweep.tune.matched_rate.points import derive_operating_points
from raysweep.tune.sweep_config import MatchedRateSearch

TARGETS = [5.0, 17.25, 40.0]  # nats, with the toy trainable's defaults (dim 16, ramped metric, ramp 4)
TOY_SPACE = {"objective.beta": 1.0, "toy.epochs": 8}  # flat dotted keys, the sweep runner's convention


@pytest.fixture(scope="module", autouse=True)
def ray_cluster():
    if ray.is_initialized():  # another module's cluster: start ours with a known size
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": worker_pythonpath(), "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


def _fit(trainable, param_space: dict, search: MatchedRateSearch, storage: Path, reports: int,
         extra_stop: Stopper | None = None):
    plan = build_matched_rate_plan(search, None, reports_per_trial=reports)
    stop = plan.stopper if extra_stop is None else CombinedStopper(plan.stopper, extra_stop)
    tuner = tune.Tuner(trainable, param_space=param_space, tune_config=plan.tune_config(reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(storage), name="mr", stop=stop, verbose=0))
    return plan, tuner.fit()


def _check_points(results, plan, tolerance: float) -> list:
    points = derive_operating_points(results, tolerance)
    assert len(points) == len(plan.searcher.tasks)
    for point in points:
        assert point.within_tolerance, point
        assert abs(point.rate / point.target_rate - 1) <= tolerance
        assert point.trials >= 1 and point.epochs > 0 and point.trial_id
    # the searcher's own ledger and Tune's results agree on the compute spent
    ledger = {(p.cell, p.target_rate): (p.trials, p.epochs) for p in plan.searcher.operating_points()}
    assert ledger == {(p.cell, p.target_rate): (p.trials, p.epochs) for p in points}
    assert sum(p.trials for p in points) == len(results)
    return points


def test_bisection_finds_beta_for_three_toy_targets(tmp_path) -> None:
    search = MatchedRateSearch(targets=TARGETS, strategy="bisection", probes=2, max_trials=12)
    plan, results = _fit(toy_trainable, TOY_SPACE, search, tmp_path, reports=8)
    assert all("objective.beta" in r.config and "objective" not in r.config for r in results)
    assert results.num_errors == 0
    for point in _check_points(results, plan, 0.05):
        assert toy_rate(point.beta, ramp=TOY_RAMP) == pytest.approx(point.rate)  # the trial ran at that beta
        assert point.epochs <= 8 * point.trials


def test_optuna_with_asha_finds_beta_for_three_toy_targets(tmp_path) -> None:
    search = MatchedRateSearch(targets=TARGETS, strategy="optuna", probes=2, max_trials=30, seed=1)
    plan, results = _fit(toy_trainable, TOY_SPACE, search, tmp_path, reports=8)
    assert plan.scheduler is not None and results.num_errors == 0
    _check_points(results, plan, 0.05)
    stopped = [r for r in results if r.metrics.get("progress", 1.0) < 1.0]
    assert stopped, "ASHA (or the superseded-trial stopper) should stop some trials early"


class _InterruptOnce(tune.Callback):
    """Sends the driver SIGINT (as Ctrl+C would) once ``after`` trials have completed: Tune saves
    the experiment and searcher state and returns, leaving the running trials unfinished."""

    def __init__(self, marker: Path, after: int) -> None:
        self.marker, self.after, self.completed = marker, after, 0

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self.completed += 1
        if self.completed >= self.after and not self.marker.exists():
            self.marker.write_text("interrupted")
            os.kill(os.getpid(), signal.SIGINT)


def test_interrupted_sweep_resumes_with_the_searcher_state(tmp_path) -> None:
    search = MatchedRateSearch(targets=TARGETS, strategy="bisection", probes=1, max_trials=12)
    space = {"objective.beta": 1.0, "toy.epochs": 4, "toy.seconds_per_epoch": 0.1}
    plan = build_matched_rate_plan(search, None, reports_per_trial=4)
    tuner = tune.Tuner(toy_trainable, param_space=space, tune_config=plan.tune_config(reuse_actors=True),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="mr", stop=plan.stopper,
                                                 callbacks=[_InterruptOnce(tmp_path / "marker", 3)], verbose=0))
    first = tuner.fit()
    first_done = {r.metrics["trial_id"] for r in first if r.metrics.get("progress") == 1.0}
    assert len(first_done) >= 3 and any(s == "searching" for s in plan.searcher.status.values())

    restored = tune.Tuner.restore(str(tmp_path / "mr"), trainable=toy_trainable, param_space=space)
    final = restored.fit()
    points = derive_operating_points(final, 0.05)
    assert len(points) == 3 and all(p.within_tolerance for p in points), points
    # finished trials were not rerun: their ids are still there, each once
    ids = [r.metrics["trial_id"] for r in final]
    assert first_done <= set(ids) and len(ids) == len(set(ids))
    assert sum(p.trials for p in points) == len(ids)


@pytest.mark.slow
def test_bisection_converges_with_the_real_tiny_trainer(tmp_path, make_trial) -> None:
    # 300 steps (25 epochs) of the tiny vector VAE: its rate is ~15 nats at beta 0.006 and ~7 at
    # beta 0.06 (per image, batch 16). Between seeds the converged rate varies by ~10%, and within one seed it is a smooth
    # but not noise-free function of beta; tolerance 0.1 keeps the test about convergence, not luck.
    base = make_trial(["train.max_steps=300", "train.val_every=75"]).flat()
    search = MatchedRateSearch(targets=[10.0], tolerance=0.1, beta_min=0.003, beta_max=0.3, probes=2,
                               max_trials=8)
    plan, results = _fit(train_trainable, base, search, tmp_path, reports=4)
    assert results.num_errors == 0
    (point,) = _check_points(results, plan, 0.1)
    assert 0.003 < point.beta < 0.3 and math.isfinite(point.distortion_sse) and math.isfinite(point.anisotropy)
