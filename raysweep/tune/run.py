"""`raysweep sweep` and `raysweep resume`: run a validated sweep on Ray Tune.

The sweep directory is ``<storage>/<name>`` (``--storage`` defaults to ``./runs``, a local path or a
URI such as ``s3://bucket/sweeps``; :mod:`raysweep.storage` has every path rule); it is Tune's
experiment directory and holds ``sweep.yaml`` (the resolved sweep, what ``resume`` reads), one
directory per trial (``<trial id>/``: Tune's results and checkpoints, ``train/`` with the loop's
outputs, ``ray_train/`` for DDP trials), ``optuna.db`` for Optuna sweeps and, for
``search.mode: matched_rate``, ``operating_points.csv`` and ``operating_points.json`` (one row per
cell and rate target, see :mod:`raysweep.tune.matched_rate.points`; also logged to MLflow).

Trackers plug in through :func:`build_callbacks`, which returns the Tune callbacks a sweep (and its
resume) runs with. What the driver prints is :mod:`raysweep.tune.console`'s; the outcome and its
table are :mod:`raysweep.tune.summary`'s.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from raysweep.errors import RaysweepError
from raysweep.storage import (
    SWEEP_FILE,
    check_storage,
    download_outputs,
    driver_outputs_dir,
    is_uri,
    read_text,
    resolve_sweep_dir,
    split_sweep_dir,
    sweep_dir_for,
    trial_outputs_uri,
    write_text,
)
from raysweep.tune import console, ray_shim
from raysweep.tune.backfill import backfill_tracking
from raysweep.tune.check import check_sweep_inputs, check_tracking_store, check_trial_checkpoints, connect_ray
from raysweep.tune.graceful import StopAtCheckpoint, grace_seconds, stop_gracefully_on_sigterm
from raysweep.tune.growth import newest_experiment_cells
from raysweep.tune.load import dump_sweep, load_sweep_dir
from raysweep.tune.modes import search_mode
from raysweep.tune.resources import ResourcePlan, local_nodes, nodes_from_ray, plan_resources
from raysweep.tune.run_names import run_namer
from raysweep.tune.space import ExpandedSweep, expand_sweep, flat_trial_params
from raysweep.tune.summary import SweepOutcome, summarize
from raysweep.tune.sweep_config import SweepConfig
from raysweep.tune.trainable import TrialContext, placement_group_reaper, run_trial


# ---------------------------------------------------------------------------- hooks
def build_callbacks(sweep: SweepConfig, sweep_dir: str, expanded: ExpandedSweep | None = None) -> list[Any]:
    """The Tune callbacks a sweep runs with (trackers such as MLflow add theirs here); `expanded`:
    the sweep's cells when already expanded.

    Called for a new sweep and again on ``resume``, so callbacks are created fresh each time. The
    MLflow callback runs in the driver, the one writer of every run, and finds existing parent and
    child runs by their tags, so a resumed sweep continues them instead of opening new ones.
    """
    from raysweep.tracking.mlflow import mlflow_callback

    root, name = split_sweep_dir(sweep_dir)
    output_dirs_fn = None
    if is_uri(sweep_dir):
        # With object storage each trial keeps its loop outputs in <trial dir>/train/ on the bucket
        # (see trainable): fetched to the driver, which cannot see another node's scratch space.
        def output_dirs_fn(trial: Any) -> list[Any]:
            uri = trial_outputs_uri(sweep_dir, trial.trial_id)
            assert uri is not None
            return [download_outputs(uri, driver_outputs_dir(sweep.name, trial.trial_id))]

    return [
        # First: on SIGTERM it ends Tune's loop so the experiment state is saved (tune.graceful).
        StopAtCheckpoint(grace_seconds()),
        mlflow_callback(
            root, name, tracking_uri=sweep.tracking.uri, experiment=sweep.tracking.experiment,
            params_fn=flat_trial_params, sweep_config=sweep.model_dump(mode="json"), output_dirs_fn=output_dirs_fn,
            drain_timeout_s=sweep.tracking.drain_timeout_s, run_name_fn=run_namer(sweep, expanded),
        ),
        # DDP trials: free the worker groups of stopped and failed trials (see trainable).
        *([placement_group_reaper()] if sweep.resources.workers > 1 else []),
    ]


def console_for(sweep: SweepConfig, expanded: ExpandedSweep, verbose: int) -> tuple[Any, list[Any]]:
    """(Tune's status table or None, console callbacks) at `verbose`: 0 silent; 1 one line per trial
    start and end and the progress line (:mod:`raysweep.tune.console`); 2 (``--verbose``) Tune's
    status table besides. `expanded`: the cells this run starts (an extension's new ones)."""
    # the keys the sweep varies, those a searcher sets itself and the key metrics (the mode's)
    mode = search_mode(sweep)
    keys = expanded.varying_keys + [k for k in expanded.distributions if k not in expanded.varying_keys]
    parameters, metrics = mode.console_keys(keys)
    if verbose < 1:
        return None, []
    progress = console.Progress(mode.planned_trials(expanded))
    table = console.progress_reporter(parameters, metrics) if verbose >= console.TABLE_VERBOSITY else None
    return table, [console.TrialLines(parameters, metrics, progress), progress]


# -------------------------------------------------------------------------------- Ray
def init_ray(address: str | None) -> None:
    """Join the cluster at `address` (``auto``: the one this process runs on, as under ``ray job
    submit``), or start a local Ray instance sized to this machine."""
    import ray

    if ray.is_initialized():
        return
    # ray.init replaces the SIGTERM handler (its core worker's crash handler aborts the driver, exit
    # -6, skipping atexit and finally); the handler of the caller (the CLI's clean exit) is put back.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        if address:
            # Bounded: an address where no head answers is one line, not Ray's minute-long wait.
            connect_ray(address, logging_level=console.RAY_LOGGING_LEVEL)
            return
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, logging_level=console.RAY_LOGGING_LEVEL)
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def plan_for(sweep: SweepConfig) -> ResourcePlan:
    """The resource plan on the cluster Ray is connected to (the local machine before Ray starts)."""
    import ray

    nodes = nodes_from_ray() if ray.is_initialized() else local_nodes()
    return plan_resources(sweep.resources, nodes)


def start_ray_for(sweep: SweepConfig, address: str | None, sweep_dir: str | None = None,
                  expanded: ExpandedSweep | None = None) -> ResourcePlan:
    """Reject an impossible plan, an unreachable tracking server or cluster, a missing data folder
    and (given the `sweep_dir`) a SQLite tracking store on a network filesystem before starting
    Ray, start (or join) Ray, plan on its nodes. `expanded`: the sweep's cells when already expanded."""
    check_sweep_inputs(sweep, address, expanded)
    if sweep_dir is not None:
        check_tracking_store(sweep, sweep_dir)
    if address is None:
        plan_for(sweep)
    console.quiet_driver()
    init_ray(address)
    return plan_for(sweep)


def build_trainable(sweep: SweepConfig, sweep_dir: str, plan: ResourcePlan) -> Any:
    """The function trainable with its context and the per-trial resources of the plan."""
    from ray import tune

    ctx = TrialContext(sweep_dir=sweep_dir, sweep_name=sweep.name, plan=plan,
                       max_failures=sweep.failure.max_failures, num_to_keep=sweep.checkpoint.num_to_keep)
    return tune.with_resources(tune.with_parameters(run_trial, ctx=ctx), plan.trial_resources())


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
        sweep: a validated sweep (see :func:`raysweep.tune.load.load_sweep`).
        storage: where the sweep directory ``<storage>/<sweep.name>`` goes (default ``./runs``).
        address: Ray cluster to join (``auto`` under ``ray job submit``); None starts local Ray.
        callbacks: extra Tune callbacks, run after those of :func:`build_callbacks`.
        verbose: 1: trial lines and the progress line (:mod:`raysweep.tune.console`); 2: Tune's status
            table besides; 0: silent.
    """
    from ray import tune

    expanded = expand_sweep(sweep)
    sweep_dir = sweep_dir_for(storage, sweep.name)
    check_storage(sweep_dir)
    if read_text(f"{sweep_dir}/{SWEEP_FILE}") is not None:
        raise RaysweepError(
            f"{sweep_dir} already holds a sweep: continue it with `raysweep resume {sweep_dir}`, or choose another "
            "--name or --storage"
        )
    mode = search_mode(sweep)
    mode.check(expanded)
    plan = start_ray_for(sweep, address, sweep_dir, expanded)
    tune_config, stop = mode.tune_config(expanded, expanded, sweep_dir, plan)
    write_text(f"{sweep_dir}/{SWEEP_FILE}", dump_sweep(sweep))
    reporter, console_callbacks = console_for(sweep, expanded, verbose)
    all_callbacks = [*build_callbacks(sweep, sweep_dir, expanded), *console_callbacks, *(callbacks or [])]
    print(mode.announce(expanded, plan, sweep_dir), flush=True)
    root, name = split_sweep_dir(sweep_dir)
    run_config = tune.RunConfig(
        name=name, storage_path=root, callbacks=all_callbacks, verbose=console.tune_verbosity(verbose), stop=stop,
        progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=sweep.failure.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.checkpoint.num_to_keep),
    )
    tuner = tune.Tuner(build_trainable(sweep, sweep_dir, plan), param_space=mode.param_space(expanded),
                       tune_config=tune_config, run_config=run_config)
    return finish_sweep(fit_gracefully(tuner, all_callbacks), sweep, expanded, sweep_dir)


def resume_sweep(
    sweep_dir: str, address: str | None = None, callbacks: list[Any] | None = None, verbose: int = 1
) -> SweepOutcome:
    """Continue an interrupted sweep: unfinished and errored trials resume from their newest
    checkpoint, finished ones are kept as they are, trials not started yet run."""
    from ray import tune

    sweep_dir = resolve_sweep_dir(sweep_dir)
    check_storage(sweep_dir)
    sweep = load_sweep_dir(sweep_dir)
    expanded = expand_sweep(sweep)
    check_trial_checkpoints(sweep_dir)
    plan = start_ray_for(sweep, address, sweep_dir, expanded)
    if not tune.Tuner.can_restore(sweep_dir):
        raise RaysweepError(f"{sweep_dir}: no Tune experiment state to resume (the sweep never started?)")
    tuner = tune.Tuner.restore(sweep_dir, trainable=build_trainable(sweep, sweep_dir, plan),
                               param_space=search_mode(sweep).param_space(expanded), resume_unfinished=True,
                               resume_errored=True)
    # Callbacks are not carried over from the interrupted run: build them again, as for a new sweep.
    reporter, console_callbacks = console_for(sweep, expanded, verbose)
    all_callbacks = [*build_callbacks(sweep, sweep_dir, expanded), *console_callbacks, *(callbacks or [])]
    ray_shim.set_restored_run_config(tuner, all_callbacks, console.tune_verbosity(verbose), reporter)
    print(f"raysweep: resuming sweep {sweep.name} in {sweep_dir}", flush=True)
    # A grown sweep's newest experiment runs only the trials `raysweep extend` added (tune.growth).
    outcome = finish_sweep(fit_gracefully(tuner, all_callbacks), sweep, newest_experiment_cells(sweep_dir, expanded),
                           sweep_dir)
    backfill_tracking(sweep_dir)
    return outcome


def fit_gracefully(tuner: Any, callbacks: list[Any]) -> Any:
    """``tuner.fit()`` with SIGTERM stopping the trials at their next checkpoint and saving Tune's
    experiment state before the caller's SIGTERM handler runs (:mod:`raysweep.tune.graceful`)."""
    stopper = next(c for c in callbacks if isinstance(c, StopAtCheckpoint))
    with stop_gracefully_on_sigterm(stopper):
        return tuner.fit()


def finish_sweep(results: Any, sweep: SweepConfig, expanded: ExpandedSweep, sweep_dir: str) -> SweepOutcome:
    """The sweep's :class:`~raysweep.tune.summary.SweepOutcome`, with what its search mode derives
    from the finished run (a matched-rate sweep's operating points, written and logged then)."""
    mode = search_mode(sweep)
    outcome = summarize(results, sweep, expanded, sweep_dir)
    outcome.num_trials_expected = mode.expected_trials(expanded)
    mode.finish(outcome, results, sweep_dir)
    return outcome
