"""Matched-rate search: per (cell, target), find the KL weight beta whose converged rate is R*.

The paper compares latent geometry *at the same rate*, so for each cell of a sweep (a combination
of the swept keys other than beta, e.g. ``loss.lambda_neural=0.5``) and each target rate R* (nats)
the user wants the beta that puts the trained model at R*. Three strategies
(``search.strategy``):

- ``bisection`` (:class:`BisectionSearcher`, in :mod:`raysweep.tune.bisection`): the converged
  rate falls monotonically with log beta, so each (cell, target) keeps a bracket on log beta and probes it, several trials at a time
  (:class:`BetaBracket` has the rules). It stops when a trial lands within ``tolerance``.
- ``optuna`` (:class:`OptunaRateSearcher`): one Optuna TPE study per (cell, target) over log beta
  minimising ``rate_error = |log(R / R*)|``, with ASHA stopping trials whose rate is off early.
- ``geco`` (:class:`GecoSearcher`): one run per (cell, target) with ``objective.geco.target_rate``.

All three are Tune ``Searcher`` s over every (cell, target) of a sweep at once. The contract with
the sweep runner:

- ``param_space`` is the sweep's base trial config (no ``grid_search``: the cells come to the
  searcher as a list of dotted overrides), nested (``{"objective": {"beta": 1.0}, ...}``) or flat
  dotted (``{"objective.beta": 1.0, ...}``); ``key_style`` says which, and every suggestion uses
  the same convention, so Tune's deep merge overrides exactly the cell keys and ``objective.beta``
  (GECO: ``objective.geco.target_rate``);
- a suggestion also carries ``operating_points.META_KEY`` (cell, target, strategy): the trainable
  removes it before validating the trial config and wraps its report with
  ``operating_points.matched_rate_report`` so results carry ``rate_error`` and ``progress``;
- ``num_samples=-1``: the searcher returns ``FINISHED`` when every (cell, target) is matched or
  out of trials. :func:`build_matched_rate_plan` returns all the pieces.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator
from ray.tune.stopper import Stopper

from raysweep.config import StrictModel
from raysweep.tune.bisection import BetaBracket, BisectionSearcher
from raysweep.tune.operating_points import (
    BETA_KEY,
    META_KEY,
    RATE_ERROR,
    TrialRecord,
    get_dotted,
    within_tolerance,
)
from raysweep.tune.rate_searcher import (
    GECO_TARGET_KEY,
    LOG_BETA_LIMIT,
    MatchedRateSearcher,
    StoppedTrials,
    cell_label,
    emit_config,
)

__all__ = [
    "GECO_TARGET_KEY", "LOG_BETA_LIMIT", "BetaBracket", "BisectionSearcher", "GecoSearcher", "MatchedRatePlan",
    "MatchedRateSearch", "MatchedRateSearcher", "OptunaRateSearcher", "StoppedTrials", "SupersededTrialStopper",
    "build_matched_rate_plan", "cell_label", "emit_config", "geco_configs", "toy_trainable", "train_trainable",
]


class MatchedRateSearch(StrictModel):
    """The sweep's ``search`` block for ``mode: matched_rate`` (see the module docstring)."""

    mode: Literal["matched_rate"] = "matched_rate"
    targets: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = Field(
        ..., min_length=1, description="rate targets R* in nats")
    tolerance: float = Field(0.05, gt=0.0, lt=1.0, description="relative: |R / R* - 1| <= tolerance")
    strategy: Literal["bisection", "optuna", "geco"] = "bisection"
    beta_min: float = Field(0.01, gt=0.0, description="initial bracket on beta (bisection widens it if needed)")
    beta_max: float = Field(10.0, gt=0.0)
    probes: int = Field(2, ge=1, description="trials in flight at once per (cell, target)")
    max_trials: int = Field(12, ge=1, description="trials per (cell, target) before giving up")
    early_stopping: bool | None = Field(None, description="ASHA on rate_error; default: on for optuna only")
    grace_period: int = Field(2, ge=1, description="validations before ASHA may stop a trial")
    reduction_factor: float = Field(3.0, gt=1.0)
    stopped_trials: StoppedTrials = Field(
        "ignore", description="what an early-stopped trial's last rate proves (bisection): "
        "rate_rises = the rate only grows in training, so a last rate above R* means beta is too small; "
        "rate_falls = the converse; ignore = nothing")
    optuna_startup_trials: int = Field(4, ge=1, description="random trials before TPE, per (cell, target)")
    seed: int = 0

    @model_validator(mode="after")
    def _bracket(self) -> MatchedRateSearch:
        if not self.beta_min < self.beta_max:
            raise ValueError("search.matched_rate.beta_min must be below search.matched_rate.beta_max")
        return self

    @property
    def uses_asha(self) -> bool:
        return self.strategy == "optuna" if self.early_stopping is None else self.early_stopping



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
                 startup_trials: int = 4, seed: int = 0, storage: Any = None,
                 key_style: Literal["nested", "dotted"] = "nested") -> None:
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        super().__init__(cells, targets, tolerance, probes, max_trials, key_style)
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
                 max_trials: int = 1, key_style: Literal["nested", "dotted"] = "nested") -> None:
        super().__init__(cells, targets, tolerance, 1, max_trials, key_style)

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


def geco_configs(cells: list[Mapping[str, Any]] | None, targets: list[float],
                 key_style: Literal["nested", "dotted"] = "nested") -> list[dict[str, Any]]:
    """The GECO strategy as a plain list of trial overrides (one per cell x target), for a runner
    that expands explicit cells instead of using a searcher. Each carries ``META_KEY``."""
    out = []
    for cell in cells or [{}]:
        for target in targets:
            config = emit_config({**cell, GECO_TARGET_KEY: float(target)}, key_style)
            config[META_KEY] = {"cell": cell_label(cell), "cell_params": dict(cell), "target": float(target),
                                "strategy": "geco"}
            out.append(config)
    return out


class SupersededTrialStopper(Stopper):
    """Stops trials of a (cell, target) that another trial has already matched (saves compute)."""

    def __init__(self, searcher: MatchedRateSearcher) -> None:
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return self.searcher.is_superseded(trial_id)

    def stop_all(self) -> bool:
        return False


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
                            reports_per_trial: int, key_style: Literal["nested", "dotted"] = "nested",
                            optuna_storage: Any = None) -> MatchedRatePlan:
    """Searcher, scheduler and stopper for a matched-rate sweep.

    ``cells``: dotted overrides, one mapping per cell (the sweep's grid without ``objective.beta``).
    ``reports_per_trial``: validations in one full-length trial (ASHA's ``max_t`` on
    ``training_iteration``; an upper bound is fine).
    """
    targets = list(search.targets)
    common = dict(tolerance=search.tolerance, key_style=key_style)
    searcher: MatchedRateSearcher
    if search.strategy == "bisection":
        searcher = BisectionSearcher(cells, targets, beta_min=search.beta_min, beta_max=search.beta_max,
                                     probes=search.probes, max_trials=search.max_trials,
                                     stopped_trials=search.stopped_trials, **common)
    elif search.strategy == "optuna":
        searcher = OptunaRateSearcher(cells, targets, beta_min=search.beta_min, beta_max=search.beta_max,
                                      probes=search.probes, max_trials=search.max_trials,
                                      startup_trials=search.optuna_startup_trials, seed=search.seed,
                                      storage=optuna_storage, **common)
    else:
        searcher = GecoSearcher(cells, targets, max_trials=1, **common)
    scheduler = None
    if search.uses_asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=max(1, reports_per_trial),
                                  grace_period=min(search.grace_period, max(1, reports_per_trial)),
                                  reduction_factor=search.reduction_factor)
    return MatchedRatePlan(searcher, scheduler, SupersededTrialStopper(searcher), search.tolerance)


def toy_trainable(config: dict[str, Any]) -> None:
    """Tune function trainable on the closed-form toy model (``raysweep.toy``), for testing searchers.

    Reads ``objective.beta`` and the matched-rate metadata (nested or dotted keys); ``toy.*`` may set
    ``dim``, ``ramp``, ``metric``, ``epochs`` (reports, default 8), ``rise`` (0.5), ``seconds_per_epoch``.
    Reports at epoch t of n the rate ``V(beta) * (1 - rise * (1 - t/n)^2)`` (nats): it climbs to the
    exact converged ``V(beta)`` at t = n, like the tiny VAE's rate, so ``stopped_trials="rate_rises"``
    holds; plus the toy distortion, anisotropy, beta, ``rate_error`` and ``progress``.
    """
    import time

    from ray import tune

    from raysweep.toy import anisotropy, distortion, metric_weights, optimal_variances, variance_rate
    from raysweep.tune.operating_points import matched_rate_report, split_trial_config

    trial, meta = split_trial_config(config)

    def toy(key: str, default: Any) -> Any:
        return get_dotted(trial, f"toy.{key}", default)

    beta = float(get_dotted(trial, BETA_KEY))
    c = metric_weights(toy("metric", "ramped"), int(toy("dim", 16)), float(toy("ramp", 4.0)))
    final_rate, s = variance_rate(c, beta), optimal_variances(c, beta)
    epochs, rise = int(toy("epochs", 8)), float(toy("rise", 0.5))
    report = matched_rate_report(lambda m, _ckpt: tune.report(m), meta["target"] if meta else final_rate,
                                 total_steps=epochs)
    for t in range(1, epochs + 1):
        time.sleep(float(toy("seconds_per_epoch", 0.0)))
        report({"rate": final_rate * (1.0 - rise * (1.0 - t / epochs) ** 2), "epoch": float(t), "step": t,
                "beta": beta, "distortion_sse": distortion(c, s), "anisotropy": anisotropy(s)}, None)


def train_trainable(config: dict[str, Any]) -> None:
    """Reference Tune function trainable for one-worker matched-rate trials of the real VAE.

    ``config`` is the nested trial config plus ``META_KEY``; the loop trains in the trial
    directory and every validation is reported (no checkpoint) with ``rate_error`` and ``progress``.
    The sweep runner's own trainable should do the same three things: drop ``META_KEY`` before
    validating, wrap ``report`` with ``matched_rate_report``, and let the loop report.
    """
    import torch
    from ray import tune

    from raysweep.config import trial_config_from_dict
    from raysweep.train.loop import train
    from raysweep.tune.operating_points import matched_rate_report, split_trial_config

    torch.set_num_threads(1)  # one intra-op thread per trial: trials share the CPU cores
    trial, meta = split_trial_config(config)
    cfg = trial_config_from_dict(trial)
    target = meta["target"] if meta else float("nan")
    report = matched_rate_report(lambda metrics, _ckpt: tune.report(metrics), target, cfg=cfg)
    train(cfg, tune.get_context().get_trial_dir(), report=report, progress=False)
