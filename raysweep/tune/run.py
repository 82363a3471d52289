"""`raysweep sweep` and `raysweep resume`: run a validated sweep on Ray Tune.

The sweep directory is ``<storage>/<name>`` (``--storage`` defaults to ``./runs``, a local path or a
URI such as ``s3://bucket/sweeps``); it is Tune's experiment directory and holds ``sweep.yaml``
(the resolved sweep, what ``resume`` reads), one directory per trial (``<trial id>/``: Tune's
results and checkpoints, ``train/`` with the loop's outputs, ``ray_train/`` for DDP trials),
``optuna.db`` for Optuna sweeps and, for ``search.mode: matched_rate``, ``operating_points.csv``
and ``operating_points.json`` (one row per cell and rate target, see
:mod:`raysweep.tune.operating_points`; also logged to MLflow).

Trackers plug in through :func:`build_callbacks`, which returns the Tune callbacks a sweep (and its
resume) runs with.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep.errors import RaysweepError
from raysweep.tune.resources import ResourcePlan, local_nodes, nodes_from_ray, plan_resources
from raysweep.tune.space import ExpandedSweep, build_param_space, expand_sweep
from raysweep.tune.sweep_config import SweepConfig, dump_sweep, sweep_from_dict
from raysweep.tune.trainable import TrialContext, is_uri, run_trial, trial_output_dir

SWEEP_FILE = "sweep.yaml"
SUMMARY_COLUMNS = ("step", "rate", "distortion_sse", "psnr", "anisotropy")


@dataclass
class SweepOutcome:
    """What a finished (or resumed) sweep reports: one row per trial, and where things are."""

    sweep_dir: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    varying_keys: list[str] = field(default_factory=list)
    num_trials_expected: int = 0
    operating_points: list[Any] = field(default_factory=list)  # OperatingPoint, matched-rate sweeps only
    operating_points_dir: str | None = None

    @property
    def num_errors(self) -> int:
        return sum(1 for row in self.rows if row["status"] == "error")

    @property
    def complete(self) -> bool:
        """True when every trial ended (none errored or was interrupted) and none is missing."""
        return self.num_trials_expected <= len(self.rows) and not any(
            row["status"] in ("error", "interrupted") for row in self.rows
        )


# ---------------------------------------------------------------------------- hooks
def build_callbacks(sweep: SweepConfig, sweep_dir: str) -> list[Any]:
    """The Tune callbacks a sweep runs with (trackers such as MLflow add theirs here).

    Called for a new sweep and again on ``resume``, so callbacks are created fresh each time. The
    MLflow callback runs in the driver, the one writer of every run, and finds existing parent and
    child runs by their tags, so a resumed sweep continues them instead of opening new ones.
    """
    import tempfile

    from raysweep.tracking.mlflow import mlflow_callback
    from raysweep.tune.space import flat_trial_params

    storage, _, name = sweep_dir.rstrip("/").rpartition("/")
    output_dirs_fn = None
    if is_uri(sweep_dir):
        # With object storage the loop's outputs stay in each node's scratch space (see trainable).
        def output_dirs_fn(trial: Any) -> list[Path]:
            return [Path(tempfile.gettempdir()) / "raysweep" / sweep.name / trial.trial_id / "train"]

    return [
        mlflow_callback(
            storage, name, tracking_uri=sweep.tracking.uri, experiment=sweep.tracking.experiment,
            params_fn=flat_trial_params, sweep_config=sweep.model_dump(mode="json"), output_dirs_fn=output_dirs_fn,
        )
    ]


# ------------------------------------------------------------------------------ paths
def sweep_dir_for(storage: str | None, name: str) -> str:
    """The sweep directory ``<storage>/<name>`` (absolute; ``storage`` defaults to ``./runs``)."""
    root = storage if storage is not None else "runs"
    if not is_uri(root):
        root = str(Path(root.removeprefix("file://")).expanduser().resolve())
    return f"{root.rstrip('/')}/{name}"


def _write_text(path: str, text: str) -> None:
    if is_uri(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as handle:
            handle.write(text.encode())
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


def _read_text(path: str) -> str | None:
    if is_uri(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(inner) as handle:
            return handle.read().decode()
    file = Path(path)
    return file.read_text() if file.is_file() else None


def optuna_storage_url(sweep: SweepConfig, sweep_dir: str) -> str | None:
    """The Optuna storage of an optuna sweep: the configured URL, or SQLite in the sweep directory
    (in ``./runs/<name>/`` when the sweep itself lives on object storage)."""
    matched = sweep.search.matched_rate
    if sweep.search.mode == "matched_rate":  # the optuna strategy's per-(cell, target) studies
        if matched is None or matched.strategy != "optuna":
            return None
    elif sweep.search.mode != "optuna" or sweep.search.optuna is None:
        return None
    elif sweep.search.optuna.storage:
        return sweep.search.optuna.storage
    local = sweep_dir if not is_uri(sweep_dir) else sweep_dir_for(None, sweep.name)
    Path(local).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local}/optuna.db"


# -------------------------------------------------------------------------------- Ray
def init_ray(address: str | None) -> None:
    """Join the cluster at `address` (``auto``: the one this process runs on, as under ``ray job
    submit``), or start a local Ray instance sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
        return
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    ray.init(address="local", num_cpus=cpus, include_dashboard=False)


def plan_for(sweep: SweepConfig, address: str | None) -> ResourcePlan:
    """The resource plan on the cluster Ray is connected to (the local machine before Ray starts)."""
    import ray

    nodes = nodes_from_ray() if ray.is_initialized() else local_nodes()
    return plan_resources(sweep.resources, nodes)


def trial_dirname(trial: Any) -> str:
    """Tune trial directory name: the trial id (the trainable computes the same path)."""
    return str(trial.trial_id)


def trial_name(trial: Any) -> str:
    """Tune trial name (the progress table's first column): the trial id, as its directory."""
    return str(trial.trial_id)


def _quiet_driver() -> None:
    # Tiny sweeps checkpoint every few seconds, which makes Tune warn about snapshot frequency on
    # every trial; that warning is about large experiments and says nothing useful here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def build_trainable(sweep: SweepConfig, sweep_dir: str, plan: ResourcePlan) -> Any:
    """The function trainable with its context and the per-trial resources of the plan."""
    from ray import tune

    ctx = TrialContext(sweep_dir=sweep_dir, sweep_name=sweep.name, plan=plan,
                       max_failures=sweep.failure.max_failures, num_to_keep=sweep.checkpoint.num_to_keep)
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), plan.trial_resources())


def _run_config(sweep: SweepConfig, sweep_dir: str, callbacks: list[Any], verbose: int, stop: Any = None) -> Any:
    from ray import tune

    storage, name = sweep_dir.rstrip("/").rsplit("/", 1)
    return tune.RunConfig(
        name=name, storage_path=storage, callbacks=callbacks, verbose=verbose, stop=stop,
        failure_config=tune.FailureConfig(max_failures=sweep.failure.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.checkpoint.num_to_keep),
    )


# ------------------------------------------------------------------------------ sweep
def run_sweep(
    sweep: SweepConfig,
    storage: str | None = None,
    address: str | None = None,
    callbacks: list[Any] | None = None,
    verbose: int = 1,
) -> SweepOutcome:
    """Run every trial of `sweep` and return one row per trial.

    Args:
        sweep: a validated sweep (see :func:`raysweep.tune.sweep_config.load_sweep`).
        storage: where the sweep directory ``<storage>/<sweep.name>`` goes (default ``./runs``).
        address: Ray cluster to join (``auto`` under ``ray job submit``); None starts local Ray.
        callbacks: extra Tune callbacks, run after those of :func:`build_callbacks`.
        verbose: Tune's verbosity (1: the progress table).
    """
    from ray import tune

    from raysweep.tune.matched_rate_sweep import matched_rate_param_space, matched_rate_tune_config
    from raysweep.tune.search import SweepSearcher, build_scheduler

    expanded = expand_sweep(sweep)
    sweep_dir = sweep_dir_for(storage, sweep.name)
    if _read_text(f"{sweep_dir}/{SWEEP_FILE}") is not None:
        raise RaysweepError(
            f"{sweep_dir} already holds a sweep: continue it with `raysweep resume {sweep_dir}`, or choose another "
            "--name or --storage"
        )
    scheduler = build_scheduler(sweep.search, expanded)
    if address is None:
        plan_for(sweep, None)  # reject an impossible plan before starting Ray
    _quiet_driver()
    init_ray(address)
    plan = plan_for(sweep, address)
    _write_text(f"{sweep_dir}/{SWEEP_FILE}", dump_sweep(sweep))
    search = sweep.search
    all_callbacks = [*build_callbacks(sweep, sweep_dir), *(callbacks or [])]
    if search.mode == "matched_rate":
        tune_config, stop = matched_rate_tune_config(sweep, expanded, sweep_dir, plan)
        assert search.matched_rate is not None
        print(f"raysweep: sweep {sweep.name}: matched rate ({search.matched_rate.strategy}), {len(expanded.cells)} "
              f"cells x {len(search.matched_rate.targets)} targets, at most {plan.max_concurrent} trials at once; "
              f"results in {sweep_dir}", flush=True)
        param_space = matched_rate_param_space(sweep, expanded)
    else:
        searcher = SweepSearcher(
            expanded, mode=search.mode, max_concurrent=plan.max_concurrent, random_seed=search.random_seed,
            optuna=search.optuna, optuna_storage=optuna_storage_url(sweep, sweep_dir), study_prefix=sweep.name,
        )
        print(f"raysweep: sweep {sweep.name}: {expanded.num_trials} trials, at most {plan.max_concurrent} at once; "
              f"results in {sweep_dir}", flush=True)
        tune_config = tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=expanded.num_trials,
            trial_dirname_creator=trial_dirname, trial_name_creator=trial_name,
            # One trial process serves the next trial: no new Python + torch start-up per trial.
            reuse_actors=True,
        )
        stop, param_space = None, build_param_space(expanded)
    tuner = tune.Tuner(
        build_trainable(sweep, sweep_dir, plan), param_space=param_space, tune_config=tune_config,
        run_config=_run_config(sweep, sweep_dir, all_callbacks, verbose, stop=stop),
    )
    results = tuner.fit()
    return finish(results, sweep, expanded, sweep_dir, plan)


def finish(results: Any, sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str, plan: ResourcePlan) -> SweepOutcome:
    """The sweep's :class:`SweepOutcome`; for a matched-rate sweep with its operating points."""
    from raysweep.tune.matched_rate_sweep import record_operating_points

    outcome = summarize(results, sweep, expanded, sweep_dir, plan)
    if sweep.search.mode == "matched_rate" and sweep.search.matched_rate is not None:
        outcome.num_trials_expected = len(expanded.cells) * len(sweep.search.matched_rate.targets)
        outcome.operating_points, outcome.operating_points_dir = record_operating_points(results, sweep, sweep_dir)
    return outcome


def load_sweep_dir(sweep_dir: str) -> SweepConfig:
    """The resolved sweep a sweep directory was started with."""
    text = _read_text(f"{sweep_dir}/{SWEEP_FILE}")
    if text is None:
        raise RaysweepError(f"{sweep_dir}: no {SWEEP_FILE}: not a raysweep sweep directory (runs/<name>)")
    import yaml

    return sweep_from_dict(yaml.safe_load(text) or {}, source=f"{sweep_dir}/{SWEEP_FILE}")


def resume_sweep(
    sweep_dir: str, address: str | None = None, callbacks: list[Any] | None = None, verbose: int = 1
) -> SweepOutcome:
    """Continue an interrupted sweep: unfinished and errored trials resume from their newest
    checkpoint, finished ones are kept as they are, trials not started yet run."""
    from ray import tune

    from raysweep.tune.matched_rate_sweep import matched_rate_param_space

    if not is_uri(sweep_dir):
        sweep_dir = str(Path(sweep_dir).expanduser().resolve())
    sweep_dir = sweep_dir.rstrip("/")
    sweep = load_sweep_dir(sweep_dir)
    expanded = expand_sweep(sweep)
    if address is None:
        plan_for(sweep, None)
    _quiet_driver()
    init_ray(address)
    plan = plan_for(sweep, address)
    if not tune.Tuner.can_restore(sweep_dir):
        raise RaysweepError(f"{sweep_dir}: no Tune experiment state to resume (the sweep never started?)")
    tuner = tune.Tuner.restore(
        sweep_dir, trainable=build_trainable(sweep, sweep_dir, plan),
        param_space=matched_rate_param_space(sweep, expanded) if sweep.search.mode == "matched_rate"
        else build_param_space(expanded),
        resume_unfinished=True, resume_errored=True,
    )
    # Callbacks are not carried over from the interrupted run: build them again, as for a new sweep.
    tuner._local_tuner.get_run_config().callbacks = [*build_callbacks(sweep, sweep_dir), *(callbacks or [])]
    tuner._local_tuner.get_run_config().verbose = verbose
    print(f"raysweep: resuming sweep {sweep.name} in {sweep_dir}", flush=True)
    results = tuner.fit()
    return finish(results, sweep, expanded, sweep_dir, plan)


# ---------------------------------------------------------------------------- summary
def _saved_statuses(sweep_dir: str) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state (what ``resume`` acts on:
    TERMINATED and ERROR trials have ended, the others will run again); {} when unreadable."""
    import json

    if is_uri(sweep_dir):
        return {}
    try:
        # The newest by name (its timestamp), as Tune picks it: syncing touches older files too.
        newest = max(Path(sweep_dir).glob("experiment_state-*.json"), key=lambda p: p.name)
        state = json.loads(newest.read_text())
        trials = [json.loads(data) for data, _ in state["trial_data"]]
        return {str(t["trial_id"]): str(t["status"]) for t in trials}
    except (ValueError, OSError, KeyError, TypeError):  # no state yet, or a format this code does not know
        return {}


def _status(result: Any, outputs: Path, tune_status: str | None) -> str:
    """finished, diverged, stopped (by ASHA, before its last step), error, or interrupted (the
    sweep stopped before the trial ended: ``resume`` continues it)."""
    import json

    metrics, config = result.metrics or {}, result.config or {}
    if result.error is not None:
        return "error"
    if tune_status is not None and tune_status not in ("TERMINATED", "ERROR"):
        return "interrupted"
    if metrics.get("diverged") == 1:
        return "diverged"
    final = outputs / "final.json"
    if final.is_file():  # the loop wrote its final summary: it ran to its end
        return str(json.loads(final.read_text()).get("status", "finished"))
    if outputs.parent.exists():  # outputs are in the sweep directory, but no final summary
        return "stopped"
    steps, step = config.get("train.max_steps"), metrics.get("step")
    return "stopped" if steps is not None and step is not None and step < steps else "finished"


def summarize(results: Any, sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str, plan: ResourcePlan) -> SweepOutcome:
    """One row per trial: id, varying params, status, last step and headline metrics, output dir."""
    from raysweep.tune.trainable import TrialContext

    ctx = TrialContext(sweep_dir=sweep_dir, sweep_name=sweep.name, plan=plan, max_failures=0, num_to_keep=1)
    keys = expanded.varying_keys + [k for k in expanded.distributions if k not in expanded.varying_keys]
    outcome = SweepOutcome(sweep_dir=sweep_dir, varying_keys=keys, num_trials_expected=expanded.num_trials)
    statuses = _saved_statuses(sweep_dir)
    for result in results:
        metrics = result.metrics or {}
        config = result.config or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        outputs = trial_output_dir(ctx, trial_id)
        row: dict[str, Any] = {"trial": trial_id, "status": _status(result, outputs, statuses.get(str(trial_id)))}
        row.update({k: config.get(k) for k in keys})
        row.update({k: metrics.get(k) for k in SUMMARY_COLUMNS})
        row["iterations"] = metrics.get("training_iteration")
        row["outputs"] = str(outputs)
        outcome.rows.append(row)
    outcome.rows.sort(key=lambda r: (config_sort_key(r, keys), r["trial"]))
    return outcome


def config_sort_key(row: dict[str, Any], keys: list[str]) -> tuple[str, ...]:
    return tuple(repr(row.get(k)) for k in keys)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return "-" if value is None else str(value)


def format_outcome(outcome: SweepOutcome, optuna_url: str | None = None) -> str:
    """The end-of-sweep table and where to find everything."""
    headers = ["trial", *outcome.varying_keys, "status", *SUMMARY_COLUMNS]
    table = [[_fmt(row.get(h)) for h in headers] for row in outcome.rows]
    widths = [max(len(h), *(len(r[i]) for r in table)) if table else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in table]
    counts: dict[str, int] = {}
    for row in outcome.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines.append("")
    lines.append(f"{len(outcome.rows)} trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    lines.append(f"sweep directory: {outcome.sweep_dir}  (per trial: <trial>/train/ holds metrics.jsonl, final.json, plots)")
    if outcome.operating_points_dir is not None:
        from raysweep.tune.matched_rate_sweep import format_operating_points

        lines.extend(["", *format_operating_points(outcome.operating_points)])
        lines.append(f"operating points: {outcome.operating_points_dir}/operating_points.csv (and .json; "
                     "also on the sweep's MLflow parent run)")
    if optuna_url:
        lines.append(f"optuna studies: optuna-dashboard {optuna_url}")
    missing = outcome.num_trials_expected - len(outcome.rows)
    if missing > 0:
        lines.append(f"{missing} trials not started yet")
    if not outcome.complete:
        lines.append(f"continue the sweep (errored, interrupted and unstarted trials) with: raysweep resume {outcome.sweep_dir}")
    return "\n".join(lines)

