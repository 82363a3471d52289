"""Typed sweep files: a `trial` block plus `search`, `resources`, `tracking`, `failure`, `checkpoint`.

A sweep file looks like::

    name: quickstart
    trial:            # the trial schema of raysweep.config (data, model, loss, objective, train)
      ...
    search:
      mode: grid      # grid | random | optuna | matched_rate (with a matched_rate: block, see below)
      grid:           # cartesian product over dotted trial keys
        objective.beta: [0.5, 2.0]
      cells:          # explicit cells (partial trial configs), crossed with the grid
        - {loss.neural: none, loss.lambda_neural: 0.0}
        - {loss.neural: box_blur, loss.lambda_neural: 0.5}
      seeds: [0, 1]   # repeats over train.seed
      distributions:  # random / optuna modes
        train.lr: {loguniform: [1.0e-4, 1.0e-2]}
      num_samples: 4  # draws per cell (random / optuna)
      scheduler: {type: asha, metric: psnr, mode: max, grace_period: 1, reduction_factor: 3}
      optuna: {metric: psnr, mode: max}
      matched_rate:   # mode matched_rate: per cell, find the beta whose converged rate is each target
        targets: [10.0]          # nats
        tolerance: 0.05          # relative
        strategy: bisection      # bisection | optuna | geco
      claims:         # how raysweep claims decides, and extend --until-decided's budget
        margin: {rate_vs_lambda: 1.0, frontier_shift: 1.0, anisotropy_vs_lambda: 0.1}
        max_seeds: 8             # until-decided: stop adding seeds here
        seeds_per_round: 2       # until-decided: seeds added per round
    resources: {workers: 1, gpus_per_worker: 0, cpus_per_worker: 1}
    tracking: {uri: null, experiment: null}
    failure: {max_failures: 1}
    checkpoint: {num_to_keep: 2}

Every block forbids unknown keys. The `trial` block is kept raw here because a base config may
only become valid once a cell fills it in; :mod:`raysweep.tune.space` validates every expanded
trial. :func:`raysweep.tune.load.load_sweep` reads, applies ``--set`` overrides and validates the
whole file, so a sweep either starts with every trial valid or does not start.

This module is the schema only: it imports pydantic and raysweep's trial schema, never Ray, so
``raysweep validate`` checks a sweep without starting (or importing) Ray.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, create_model, field_validator, model_validator

from raysweep.config import TRIAL_BLOCKS, StrictModel, format_validation_error
from raysweep.errors import RaysweepError
from raysweep.names import CLAIM_SPECS, METRICS, is_known_metric
from raysweep.registry import MATCHED_RATE_STRATEGIES, SEARCH_MODES
from raysweep.tune.keys import flatten_once

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
#: Resources Ray defines on every node: not allowed under ``resources.custom``.
RAY_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})

#: What an early-stopped matched-rate trial's last rate proves (see ``MatchedRateSearch.stopped_trials``).
StoppedTrials = Literal["ignore", "rate_rises", "rate_falls"]


def check_metric(metric: str, where: str) -> str:
    """`metric` if the training loop reports it (:func:`raysweep.names.is_known_metric`), else a
    one-line error naming `where`."""
    if is_known_metric(metric):
        return metric
    known = ", ".join([*sorted(METRICS), "distortion_<term>", "train_<value>", "balancer/<term>/<value>"])
    raise ValueError(f"{where}: {metric!r} is not a metric the training loop reports; use one of {known}")


class DistributionConfig(StrictModel):
    """Exactly one of: ``uniform: [low, high]``, ``loguniform: [low, high]`` (low > 0),
    ``randint: [low, high)`` or ``choice: [v1, v2, ...]``."""

    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DistributionConfig:
        given = [k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a distribution needs exactly one of uniform, loguniform, randint, choice "
                             f"(got {', '.join(given) or 'none'})")
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: give at least one value")
            return self
        low, high = getattr(self, kind)
        if not low < high:
            raise ValueError(f"{kind}: low must be below high (got [{low}, {high}])")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: low must be positive (got {low})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("uniform", "loguniform", "randint", "choice") if getattr(self, k) is not None)

    def values_to_check(self) -> list[Any]:
        """The values that bound what this distribution can produce (checked against the trial schema)."""
        if self.choice is not None:
            return list(self.choice)
        low, high = getattr(self, self.kind)
        return [low, high - 1] if self.kind == "randint" else [low, high]


class SchedulerConfig(StrictModel):
    """Trial scheduler. ASHA counts time in validations (one report = one step of `training_iteration`)."""

    type: Literal["fifo", "asha"] = "fifo"
    metric: str | None = Field(None, description="metric ASHA compares; defaults to search.optuna.metric")
    mode: Literal["min", "max"] | None = None
    grace_period: int = Field(1, ge=1, description="validations every trial gets before it can be stopped")
    reduction_factor: float = Field(3.0, gt=1.0)
    max_t: int | None = Field(None, ge=1, description="validations of a full trial (default: from train.max_steps / train.val_every)")


class OptunaConfig(StrictModel):
    """TPE through Ray Tune's OptunaSearch; one study per grid cell."""

    metric: str
    mode: Literal["min", "max"]
    storage: str | None = Field(None, description="Optuna storage URL (default sqlite:///<sweep dir>/optuna.db)")
    sampler_seed: int | None = 0


class MatchedRateSearch(StrictModel):
    """The ``search.matched_rate`` block of ``mode: matched_rate``: per cell, find the beta whose
    converged rate is each target (strategies in :mod:`raysweep.tune.matched_rate`)."""

    mode: Literal["matched_rate"] = "matched_rate"
    targets: list[Annotated[float, Field(gt=0.0, allow_inf_nan=False)]] = Field(
        ..., min_length=1, description="rate targets R* in nats")
    tolerance: float = Field(0.05, gt=0.0, lt=1.0, description="relative: |R / R* - 1| <= tolerance")
    strategy: Literal[MATCHED_RATE_STRATEGIES.names()] = MATCHED_RATE_STRATEGIES.default  # type: ignore[valid-type]
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
    warm: bool = Field(True, description="start each (cell, target, seed) from what its neighbours learned: its "
                       "other seeds, other targets, other cells (bisection, optuna); false: every one from scratch")

    @model_validator(mode="after")
    def _bracket(self) -> MatchedRateSearch:
        if not self.beta_min < self.beta_max:
            raise ValueError("search.matched_rate.beta_min must be below search.matched_rate.beta_max")
        return self

    @property
    def uses_asha(self) -> bool:
        """ASHA on ``rate_error``: as asked, else the strategy's default (``StrategySpec.asha``)."""
        return MATCHED_RATE_STRATEGIES[self.strategy].asha if self.early_stopping is None else self.early_stopping

    @property
    def steers(self) -> bool:
        """Whether the strategy steers one run per task to its target (GECO; ``StrategySpec.steers``)."""
        return MATCHED_RATE_STRATEGIES[self.strategy].steers

    @property
    def trials_per_task(self) -> int:
        """The most trials one (cell, target) may run: one steered run, else ``max_trials`` probes."""
        return 1 if self.steers else self.max_trials


#: Equivalence margins of the claims, one optional field per registered claim (:data:`raysweep.names.CLAIM_SPECS`),
#: each in its claim's unit; None: the claim's default margin. A claim is ``negligible`` when its 90% interval
#: lies inside +/- its margin.
ClaimMargins = create_model(
    "ClaimMargins", __base__=StrictModel,
    **{spec.name: (float | None, Field(None, gt=0, description=f"{spec.unit} (default {spec.default_margin:g})"))
       for spec in CLAIM_SPECS.values()},
)


class ClaimsConfig(StrictModel):
    """How the claims are decided (``raysweep claims``, the report) and the budget of
    ``raysweep extend --until-decided`` (which adds seeds in rounds until every claim is decided)."""

    margin: ClaimMargins = Field(default_factory=ClaimMargins)
    max_seeds: int | None = Field(None, ge=2, description="until-decided: the most seeds the sweep may reach "
                                  "(default: twice its seeds, at least 6)")
    seeds_per_round: int = Field(2, ge=1, description="until-decided: seeds added per round")
    looks: int = Field(1, ge=1, description="looks taken or planned at the claims (written by extend --until-decided)")
    alpha: float = Field(0.05, gt=0, lt=1, description="the false-verdict rate the claims may spend over every look "
                         "of the sweep")
    alpha_look: float | None = Field(None, gt=0, lt=1, description="the level of the last look of --until-decided "
                                     "(written by it; what a later read of the claims tests at)")
    alpha_spent: float = Field(0.0, ge=0, description="the false-verdict rate the looks of --until-decided have spent "
                               "(written by it, look by look)")
    alpha_bound: float | None = Field(None, gt=0, description="the bound on the false-verdict rate over every look: "
                                      "alpha, plus any --extra-alpha a later --until-decided carried (written by it)")


def _flatten_once(tree: dict[str, Any], where: str) -> dict[str, Any]:
    try:
        return flatten_once(tree, where)
    except RaysweepError as err:  # as a ValueError, pydantic reports it as this field's error
        raise ValueError(str(err)) from None


class SearchConfig(StrictModel):
    """What varies across trials (see the module docstring)."""

    mode: Literal[SEARCH_MODES.names()] = SEARCH_MODES.default  # type: ignore[valid-type]
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    cells: list[dict[str, Any]] = Field(default_factory=list)
    seeds: list[int] | None = None
    distributions: dict[str, DistributionConfig] = Field(default_factory=dict)
    num_samples: int = Field(1, ge=1, description="random draws / Optuna trials per cell")
    random_seed: int = Field(0, description="seed of the random mode's draws")
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    optuna: OptunaConfig | None = None
    matched_rate: MatchedRateSearch | None = Field(
        None, description="mode matched_rate: rate targets, tolerance, strategy (bisection | optuna | geco)")
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig)

    @field_validator("grid", mode="before")
    @classmethod
    def _flatten_grid(cls, value: Any) -> Any:
        # Accept both `loss.lambda_neural: [...]` and nested `loss: {lambda_neural: [...]}`, never both.
        return _flatten_once(value, "search.grid") if isinstance(value, dict) else value

    @field_validator("cells", mode="before")
    @classmethod
    def _flatten_cells(cls, value: Any) -> Any:
        # A cell is a partial trial config: its keys merge into the trial block, in either spelling.
        if not isinstance(value, list):
            return value
        return [_flatten_once(c, f"search.cells[{i}]") if isinstance(c, dict) else c for i, c in enumerate(value)]

    @field_validator("distributions", mode="before")
    @classmethod
    def _parse_distributions(cls, value: Any) -> Any:
        # Parse each entry here so an error names its dotted key, not just the distribution.
        if not isinstance(value, dict):
            return value
        parsed: dict[str, DistributionConfig] = {}
        for key, spec in value.items():
            if isinstance(spec, DistributionConfig):
                parsed[key] = spec
                continue
            if not isinstance(spec, dict):
                raise ValueError(f"search.distributions.{key}: expected a mapping such as {{uniform: [0.1, 1.0]}}, got {spec!r}")
            try:
                parsed[key] = DistributionConfig.model_validate(spec)
            except ValidationError as err:
                raise ValueError(f"search.distributions.{key}: {format_validation_error(err, DistributionConfig)}") from None
        return parsed

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"search.grid.{key}: give at least one value")
        cell_keys = {k for cell in self.cells for k in cell}
        overlaps = [("search.grid", set(self.grid)), ("search.cells", cell_keys), ("search.distributions", set(self.distributions))]
        for i, (name_a, keys_a) in enumerate(overlaps):
            for name_b, keys_b in overlaps[i + 1 :]:
                both = sorted(keys_a & keys_b)
                if both:
                    raise ValueError(f"{name_a} and {name_b} both set {', '.join(both)}: set each key in one place")
        for where, keys in overlaps:
            bad = sorted(k for k in keys if k.split(".")[0] not in TRIAL_BLOCKS)
            if bad:
                raise ValueError(f"{where}.{bad[0]}: not a trial key; keys start with one of {', '.join(TRIAL_BLOCKS)}")
        if self.seeds is not None:
            if not self.seeds:
                raise ValueError("search.seeds: give at least one seed (or leave it out)")
            if any("train.seed" in keys for _, keys in overlaps):
                raise ValueError("search.seeds repeats over train.seed: do not also set train.seed in grid, cells or distributions")
        spec = SEARCH_MODES[self.mode]
        for other in SEARCH_MODES:  # a mode's own block (search.optuna, search.matched_rate) is its alone
            if other.block is not None and other.block != spec.block and getattr(self, other.block) is not None:
                raise ValueError(f"search.{other.block} is only used with search.mode {other.name} (mode is {self.mode})")
        if spec.block is not None and getattr(self, spec.block) is None:
            raise ValueError(f"search.mode {self.mode} needs a search.{spec.block} block ({spec.block_example})")
        sampling = [s.name for s in SEARCH_MODES if s.samples]
        if not spec.fixed_beta:
            self._check_searches_beta()
        elif not spec.samples:
            if self.distributions:
                raise ValueError(f"search.distributions needs search.mode {' or '.join(sampling)} (mode is {self.mode})")
            if self.num_samples != 1:
                raise ValueError(f"search.num_samples > 1 repeats identical {self.mode} trials: use search.seeds for "
                                 f"repeats, or search.mode {sampling[0]}")
        elif not self.distributions:
            raise ValueError(f"search.mode {self.mode} needs search.distributions (what to sample)")
        if self.optuna is not None:
            check_metric(self.optuna.metric, "search.optuna.metric")
        sched = self.scheduler
        if sched.type == "asha":
            if sched.metric is None and self.optuna is not None:
                sched.metric, sched.mode = self.optuna.metric, self.optuna.mode
            if sched.metric is None or sched.mode is None:
                raise ValueError("search.scheduler: asha needs metric and mode (e.g. metric: psnr, mode: max)")
            check_metric(sched.metric, "search.scheduler.metric")
        return self

    def _check_searches_beta(self) -> None:
        """A mode that searches beta (matched rate; GECO: sets the rate target) itself: the grid and
        cells hold the other keys only, and nothing is sampled or scheduled besides."""
        assert self.matched_rate is not None
        owned = ["objective.beta"]
        if self.matched_rate.steers:
            owned.append("objective.geco.target_rate")
        for key in owned:
            why = f"search.mode {self.mode} ({self.matched_rate.strategy}) searches {key} itself: remove it"
            if key in self.grid:
                raise ValueError(f"search.grid.{key}: {why}")
            for i, cell in enumerate(self.cells):
                if key in cell:
                    raise ValueError(f"search.cells[{i}].{key}: {why}")
        if self.distributions:
            raise ValueError(f"search.distributions.{next(iter(self.distributions))}: not used with search.mode "
                             f"{self.mode} (the searcher picks beta): remove search.distributions")
        if self.scheduler != SchedulerConfig():
            raise ValueError(f"search.scheduler: not used with search.mode {self.mode}; set "
                             "search.matched_rate.early_stopping (ASHA on rate_error) instead")
        if self.num_samples != 1:
            raise ValueError(f"search.num_samples: not used with search.mode {self.mode}; set "
                             "search.matched_rate.max_trials (trials per cell and target) instead")

    @property
    def samples_per_cell(self) -> int:
        """Trials per cell: ``num_samples`` for a sampling mode (``SearchModeSpec.samples``), else 1."""
        return self.num_samples if SEARCH_MODES[self.mode].samples else 1

    @property
    def uses_optuna_storage(self) -> bool:
        """Whether the sweep keeps Optuna studies: the optuna mode's per-cell studies, or a matched-rate
        strategy's per-(cell, target) ones (``StrategySpec.optuna``)."""
        if self.matched_rate is not None:
            return MATCHED_RATE_STRATEGIES[self.matched_rate.strategy].optuna
        return self.optuna is not None

    @property
    def num_targets(self) -> int:
        """Rate targets of a matched-rate search (1 for the other modes)."""
        return len(self.matched_rate.targets) if self.matched_rate is not None else 1


class ResourcesConfig(StrictModel):
    """Per-trial resources: `workers` DDP ranks, each with `cpus_per_worker` and `gpus_per_worker`."""

    workers: int = Field(1, ge=1, description="DDP world size per trial (1: the loop runs in the Tune trial process)")
    gpus_per_worker: float = Field(0.0, ge=0.0, description="a fraction below 1 only with one worker")
    cpus_per_worker: float = Field(1.0, gt=0.0)
    accelerator_type: str | None = Field(None, description="e.g. A100; trials run only on nodes of that type")
    custom: dict[str, float] = Field(
        default_factory=dict,
        description="custom Ray node resources each worker reserves (the trial process with one worker), e.g. "
        "{spot_node: 1}: trials run only on nodes started with them (`ray start --resources`)")

    @field_validator("custom")
    @classmethod
    def _custom_names(cls, value: dict[str, float]) -> dict[str, float]:
        # CPU, GPU and memory have their own keys; Ray's accelerator and node-id resources are Ray's.
        for name, amount in value.items():
            if name in RAY_BUILTIN_RESOURCES or name.startswith(("accelerator_type:", "node:")):
                raise ValueError(f"resources.custom.{name}: a Ray built-in resource; set it with resources."
                                 "cpus_per_worker, gpus_per_worker or accelerator_type, and keep custom for your own")
            if not amount > 0:
                raise ValueError(f"resources.custom.{name}: {amount} must be positive (the amount each worker reserves)")
        return value


class TrackingConfig(StrictModel):
    """Where trials are tracked (consumed by the MLflow integration)."""

    uri: str | None = Field(None, description="MLflow tracking URI (default: sqlite:///<storage>/mlflow.db, one store for every sweep under --storage)")
    experiment: str | None = Field(None, description="MLflow experiment (default: the sweep name)")
    report_every: float = Field(
        60.0, ge=0.0, description="seconds between rewrites of <sweep dir>/report while `raysweep sweep` runs, as "
        "trials finish; the last, when the sweep ends, is the report `raysweep report` draws; 0: no report")
    drain_timeout_s: float = Field(
        300.0, ge=0.0, description="at the end of a sweep, how long to wait for tracking updates queued while the "
        "tracking server was unreachable; what is still unsent is listed for `raysweep sync`")


class FailureConfig(StrictModel):
    max_failures: int = Field(1, ge=-1, description="retries of a failed trial, from its newest checkpoint (a DDP trial is retried as a whole, by Tune, with a new worker group); -1 = forever")


class CheckpointConfig(StrictModel):
    num_to_keep: int = Field(2, ge=1, description="newest checkpoints kept per trial in the sweep storage")


class SweepConfig(StrictModel):
    """A whole sweep. `trial` is the raw base trial mapping (validated per expanded trial)."""

    name: str = Field(pattern=NAME_PATTERN)
    description: str | None = None
    trial: dict[str, Any] = Field(default_factory=dict)
    search: SearchConfig = Field(default_factory=SearchConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    failure: FailureConfig = Field(default_factory=FailureConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    #: The sweep's expansion and the content it was made from (:func:`raysweep.tune.space.expand_sweep`).
    _expansion: tuple[str, Any] | None = PrivateAttr(None)

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-serialisable mapping that :func:`raysweep.tune.load.sweep_from_dict` reads back unchanged."""
        return self.model_dump(mode="json", exclude_none=False)

