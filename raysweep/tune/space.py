"""From a sweep file to the trials it stands for: cells, their validated trial configs, Tune's
param space.

A *cell* is one deterministic assignment of dotted trial keys: one explicit entry of
``search.cells`` crossed with one point of the ``search.grid`` product and one of ``search.seeds``.
Random draws and Optuna trials happen inside a cell (``search.num_samples`` per cell), so

    number of trials = cells x num_samples.

Every cell's full trial config is validated here, before Ray starts; an error names the place in
the sweep file that produced the bad value (``search.grid.loss.lambda_neural[2]: ...``).

The Tune config of a trial is the trial's complete flattened config (dotted keys, so every value
shows as a parameter), plus ``cell``: the cell's index.
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from raysweep.config import (
    TRIAL_BLOCKS,
    TrialConfig,
    flatten,
    format_validation_error,
    set_dotted,
    validate_model,
)
from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS
from raysweep.tune.sweep_config import DistributionConfig, SchedulerConfig, SweepConfig

CELL_KEY = "cell"


@dataclass(frozen=True)
class Cell:
    """One deterministic assignment of trial keys and the complete trial config it gives."""

    index: int
    assignments: dict[str, Any]
    sources: dict[str, str]  # dotted trial key -> where in the sweep file its value came from
    flat: dict[str, Any]  # the validated trial config, flattened to dotted keys

    def label(self) -> str:
        """Short human-readable description, e.g. ``loss.lambda_neural=0.5,objective.beta=2``."""
        return ",".join(f"{k}={v}" for k, v in self.assignments.items()) or "base"


@dataclass(frozen=True)
class ExpandedSweep:
    """The cells of a sweep and what is sampled inside each."""

    cells: list[Cell]
    distributions: dict[str, DistributionConfig] = field(default_factory=dict)
    samples_per_cell: int = 1

    @property
    def num_trials(self) -> int:
        return len(self.cells) * self.samples_per_cell

    @property
    def varying_keys(self) -> list[str]:
        """Flat trial keys whose value differs between cells (in first-seen order).

        A key assigned a whole block (a grid axis ``data: [{dataset: celeba, ...}, ...]``) counts
        by the leaves under it: the flat config has no ``data`` key, and a Tune config without
        ``data.dataset`` would run every cell on the first cell's dataset."""
        keys: list[str] = []
        for cell in self.cells:
            for key in cell.assignments:
                leaves = [k for k in cell.flat if k == key or k.startswith(key + ".")] or [key]
                for leaf in leaves:
                    if leaf not in keys and len({repr(c.flat.get(leaf)) for c in self.cells}) > 1:
                        keys.append(leaf)
        return keys

    def validations_per_trial(self) -> int | None:
        """Most validations any trial reports (``ceil(max_steps / val_every)``), None when a trial
        is sized in epochs only or a distribution changes its length."""
        if {"train.max_steps", "train.val_every", "train.epochs"} & set(self.distributions):
            return None
        counts = []
        for cell in self.cells:
            steps, every = cell.flat.get("train.max_steps"), cell.flat["train.val_every"]
            if steps is None:
                return None
            counts.append(math.ceil(steps / every))
        return max(counts)


def asha_max_t(sched: SchedulerConfig, expanded: ExpandedSweep) -> int:
    """ASHA's ``max_t`` in validations (one ``training_iteration`` per report): the configured one,
    else one more than the validations of the longest trial, so ASHA never stops a trial at its
    last validation (which would cut off its final outputs). A one-line error when it cannot be
    inferred or the grace period exceeds it. Pure: ``raysweep validate`` checks it without Ray."""
    max_t = sched.max_t
    if max_t is None:
        validations = expanded.validations_per_trial()
        if validations is None:
            raise RaysweepError(
                "search.scheduler.max_t: cannot infer the number of validations per trial (set by train.epochs or "
                "sampled): set max_t to it (train steps / train.val_every)"
            )
        max_t = validations + 1
    if sched.grace_period > max_t:
        raise RaysweepError(f"search.scheduler.grace_period {sched.grace_period} exceeds max_t {max_t} validations")
    return max_t


# ------------------------------------------------------------------------------- expansion
def _assignments(sweep: SweepConfig) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Every cell's assignments and their sources, in order: cells x grid x seeds."""
    search = sweep.search
    cells = list(enumerate(search.cells)) or [(None, {})]
    grid_keys = list(search.grid)
    grid_points = itertools.product(*(list(enumerate(search.grid[k])) for k in grid_keys))
    grid = [list(zip(grid_keys, point, strict=True)) for point in grid_points]
    seeds = list(enumerate(search.seeds)) if search.seeds is not None else [(None, None)]
    out = []
    for (ci, cell), point, (si, seed) in itertools.product(cells, grid, seeds):
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for key, value in cell.items():
            values[key], sources[key] = value, f"search.cells[{ci}].{key}"
        for key, (i, value) in point:
            values[key], sources[key] = value, f"search.grid.{key}[{i}]"
        if si is not None:
            values["train.seed"], sources["train.seed"] = seed, f"search.seeds[{si}]"
        out.append((values, sources))
    return out


def _tree(base: dict[str, Any], values: dict[str, Any], sources: dict[str, str]) -> dict[str, Any]:
    tree = copy.deepcopy(base)
    for key, value in values.items():
        try:
            set_dotted(tree, key, copy.deepcopy(value))
        except RaysweepError as err:
            raise RaysweepError(f"{sources.get(key, key)}: {str(err).split(': ', 1)[-1]}") from None
    return tree


def _blame(err: ValidationError, sources: dict[str, str], label: str) -> RaysweepError:
    """One line naming where in the sweep file a validation error of an expanded trial came from."""
    err_key = ".".join(str(p) for p in err.errors()[0]["loc"] if not isinstance(p, int))
    message = format_validation_error(err, TrialConfig)
    if err_key in sources:
        return RaysweepError(f"{sources[err_key]}: {message.removeprefix(err_key + ': ')}")
    related = [k for k in sources if k.startswith(err_key + ".") or err_key.startswith(k + ".")]
    if len(related) == 1:
        return RaysweepError(f"{sources[related[0]]}: {message}")
    cells = {sources[k].split("]")[0] + "]" for k in related if sources[k].startswith("search.cells[")}
    if related and len(cells) == 1 and all(sources[k].startswith("search.cells[") for k in related):
        return RaysweepError(f"{cells.pop()}: {message}")
    if related:
        return RaysweepError(f"search: the trial with {label} is invalid: {message}")
    return RaysweepError(f"trial.{message}")


def validate_trial_tree(tree: dict[str, Any], sources: dict[str, str], label: str) -> TrialConfig:
    """Validate one expanded trial mapping; errors are blamed on their source in the sweep file."""
    try:
        return TrialConfig.model_validate(tree)
    except ValidationError as err:
        raise _blame(err, sources, label) from None


def expand_sweep(sweep: SweepConfig) -> ExpandedSweep:
    """All cells of `sweep`, each validated; the bounds of every distribution validated too.

    A sweep is expanded once: the expansion is kept on the sweep with the content it was made from,
    and handed back while that content is unchanged (validating a sweep, checking its inputs,
    naming its runs and running it all read the one expansion). Treat it as read-only."""
    content = sweep.model_dump_json()
    kept = sweep._expansion
    if kept is not None and kept[0] == content:
        expanded: ExpandedSweep = kept[1]
        return expanded
    expanded = _expand(sweep)
    sweep._expansion = (content, expanded)
    return expanded


def _expand(sweep: SweepConfig) -> ExpandedSweep:
    base = sweep.trial
    if not isinstance(base, dict):
        raise RaysweepError("trial: expected a mapping with data, model, loss, objective, train")
    cells: list[Cell] = []
    for index, (values, sources) in enumerate(_assignments(sweep)):
        label = ",".join(f"{k}={v}" for k, v in values.items()) or "base"
        cfg = validate_trial_tree(_tree(base, values, sources), sources, label)
        cells.append(Cell(index=index, assignments=values, sources=sources, flat=cfg.flat()))
    if not cells:
        raise RaysweepError("search: the sweep has no trials")
    for key, dist in sweep.search.distributions.items():
        where = f"search.distributions.{key}.{dist.kind}"
        for cell in cells[:1] if len(cells) > 64 else cells:
            for value in dist.values_to_check():
                values = {**cell.assignments, key: value}
                sources = {**cell.sources, key: where}
                validate_trial_tree(_tree(base, values, sources), sources, cell.label())
    return ExpandedSweep(cells=cells, distributions=dict(sweep.search.distributions),
                         samples_per_cell=sweep.search.samples_per_cell)


MAX_GENERATED_IMAGES = 20_000_000  # the loop shuffles a list of every index to split the data


def check_generated_data(expanded: ExpandedSweep) -> None:
    """Every cell on a generated dataset (``DatasetSpec.generated``: XYSquares) has a size the loop can
    split and leaves at least one training batch after the validation split (datasets read from
    folders are checked by the trials, on the machines that hold the folders). Only the dataset's
    length is computed: a generated dataset's builder makes no image."""
    import raysweep.data  # noqa: F401  (attaches every dataset's builder to the registry)

    seen: set[str] = set()
    for cell in expanded.cells:
        spec = DATASETS[cell.flat["data.dataset"]]
        if not spec.generated:
            continue
        data = {k: v for k, v in cell.flat.items() if k.startswith("data.")}
        key = repr(sorted(data.items())) + repr(cell.flat["train.batch_size"])
        if key in seen:
            continue
        seen.add(key)
        data_keys = [k for k in cell.sources if k.startswith("data")]
        where = cell.sources[data_keys[0]] if len(data_keys) == 1 else "trial.data"
        try:
            total = len(DATASETS.code(spec.name)(trial_config_from_params(cell.flat).data))
        except RaysweepError as err:
            raise RaysweepError(f"{where}: {err}") from None
        if total > MAX_GENERATED_IMAGES:
            raise RaysweepError(
                f"{where}: {spec.name} here has {total:,} images, too many to split in memory: make it "
                f"smaller ({spec.resize_hint})"
            )
        held_out = min(int(data["data.val_size"]), total)
        train = total - held_out if data["data.train_size"] is None else min(int(data["data.train_size"]), total - held_out)
        batch = cell.flat["train.batch_size"]
        if train < batch:
            raise RaysweepError(
                f"{where}: {spec.name} here has {total} images and data.val_size holds out {held_out}, leaving {train} "
                f"for training, fewer than train.batch_size {batch}: lower data.val_size or train.batch_size, or "
                f"make it larger ({spec.resize_hint})"
            )


# ----------------------------------------------------------------------------- Tune config
def ray_domain(dist: DistributionConfig) -> Any:
    """The Ray Tune search domain of a distribution (for display and for OptunaSearch)."""
    from ray import tune

    if dist.choice is not None:
        return tune.choice(list(dist.choice))
    low, high = getattr(dist, dist.kind)
    return {"uniform": tune.uniform, "loguniform": tune.loguniform, "randint": tune.randint}[dist.kind](low, high)


def build_param_space(expanded: ExpandedSweep) -> dict[str, Any]:
    """Tune's ``param_space``: the constant part of every trial's flat config, plus a placeholder
    domain for each key the sweep varies (so Tune's progress table shows it as a parameter).

    The sweep's searcher (:mod:`raysweep.tune.search`, :mod:`raysweep.tune.modes`) fills every placeholder with
    a concrete value for each trial.
    """
    from ray import tune

    varying = set(expanded.varying_keys) | set(expanded.distributions)
    space: dict[str, Any] = {k: v for k, v in expanded.cells[0].flat.items() if k not in varying}
    if len(expanded.cells) > 1:
        space[CELL_KEY] = tune.choice(list(range(len(expanded.cells))))
    for key in expanded.varying_keys:
        if key in expanded.distributions:
            continue
        distinct: dict[str, Any] = {}
        for cell in expanded.cells:
            distinct.setdefault(repr(cell.flat[key]), cell.flat[key])
        space[key] = tune.choice(list(distinct.values()))
    for key, dist in expanded.distributions.items():
        space[key] = ray_domain(dist)
    return space


def cell_params(cell: Cell, varying_keys: list[str]) -> dict[str, Any]:
    """The part of a trial's Tune config that its cell decides."""
    return {CELL_KEY: cell.index, **{k: cell.flat[k] for k in varying_keys}}


def trial_config_from_params(params: dict[str, Any]) -> TrialConfig:
    """Rebuild and validate a trial config from a Tune config of dotted keys (other keys ignored)."""
    tree: dict[str, Any] = {}
    for key, value in params.items():
        if key.split(".")[0] in TRIAL_BLOCKS:
            set_dotted(tree, key, value)
    return validate_model(TrialConfig, tree)


def flat_trial_params(params: dict[str, Any]) -> dict[str, Any]:
    """The dotted trial keys of a Tune config (what a tracker logs as the trial's params)."""
    return flatten(trial_config_from_params(params).to_dict())
