"""``raysweep extend SWEEP_DIR --set ...``: grow a finished grid or matched-rate sweep by the trials it lacks.

A researcher who wants more seeds, or one more beta or lambda, after a sweep has finished gives
the grown values (``--set search.seeds=[0,1,2,3]``, ``--set search.grid.loss.lambda_neural=[...]``,
``--set search.cells=[...]``). Ray's ``Tuner.restore`` forbids changing an experiment, so the
grown sweep is raysweep's own:

- Only what varies may change: ``search.seeds``, the values of ``search.grid`` and
  ``search.cells``. Any other difference from the directory's ``sweep.yaml`` (a trial key such as
  ``trial.train.max_steps``, the search mode, resources, tracking) is refused with one line naming
  the key, because the trials already run would no longer be trials of the sweep. So is a grown
  sweep that leaves out a trial already run, a sweep that has not finished (``raysweep resume``
  it first) and a search that is neither a grid nor matched rate (random draws and Optuna
  studies have no fixed set of points to grow).
- A matched-rate sweep grows by seeds (``--set search.seeds=[0,1,2]``) or cells: each new
  (cell, seed) is searched at every target, and nothing already run is rerun. The new tasks start
  warm: the searcher takes the sweep's ``operating_points.json`` as facts
  (:meth:`raysweep.tune.matched_rate.searchers.MatchedRateSearcher.known_points`), so a new seed
  of a cell starts from that cell's matched betas at its other seeds. The new operating points are
  added to that file (one row per (cell, target, seed)).
- A trial is identified by its complete flat trial config (:attr:`raysweep.tune.space.Cell.flat`),
  so the new trials are exactly the grown sweep's cells that the sweep in the directory did not
  have, wherever the values sit in the lists. With nothing new, nothing starts.
- The new trials run as a new Tune experiment in the same sweep directory (same storage and
  name: Tune adds its experiment state beside the earlier one and trial folders with new ids),
  with the sweep's searcher restricted to the new cells. Its param space is the grown sweep's, so
  a later ``raysweep resume`` (which restores the newest experiment with the param space of
  ``sweep.yaml``, rewritten here to the grown sweep before anything runs) continues an
  interrupted extension and counts its trials from ``extension.json``
  (:mod:`raysweep.tune.growth`); finished trials are never touched. The MLflow callback finds the sweep's
  parent run by its tags as on a resume, so the new child runs join the same parent (its
  ``sweep.yaml`` artifact is replaced by the grown one) and ``raysweep report`` shows them all.

A new trial's ``cell`` param is its index in the grown sweep; earlier trials keep the index they
ran with.
"""

from __future__ import annotations

from typing import Any

from raysweep import storage
from raysweep.config import flatten
from raysweep.errors import RaysweepError
from raysweep.registry import SEARCH_MODES
from raysweep.tune import console
from raysweep.tune.growth import NewCells, identity, restricted, write_extension
from raysweep.tune.load import apply_sweep_overrides, dump_sweep, load_sweep_dir, sweep_from_dict
from raysweep.tune.modes import search_mode
from raysweep.tune.space import ExpandedSweep, expand_sweep
from raysweep.tune.summary import SweepOutcome
from raysweep.tune.sweep_config import SweepConfig

#: The keys of a sweep file that extend may change (a key equal to one, or under one ending in ``.``);
#: ``search.claims`` changes how the claims are read, never a trial.
GROWABLE = ("search.seeds", "search.cells", "search.grid.", "search.claims.")
_ENDED = ("TERMINATED", "ERROR")


def _growable(key: str) -> bool:
    return any(key == g.rstrip(".") or key.startswith(g.rstrip(".") + ".") for g in GROWABLE)


def check_only_growth(old: SweepConfig, new: SweepConfig) -> list[str]:
    """The growable keys that differ; a one-line error naming the first other key that differs."""
    before, after = flatten(old.to_dict()), flatten(new.to_dict())
    changed = [k for k in list(before) + [k for k in after if k not in before] if before.get(k) != after.get(k)]
    for key in changed:
        if not _growable(key):
            raise RaysweepError(
                f"{key}: extend only grows what varies (search.seeds, search.grid.<key>, search.cells); changing {key} "
                f"from {before.get(key)!r} to {after.get(key)!r} would change the trials already run: start a new "
                "sweep (raysweep sweep --name ...) instead"
            )
    return changed


def check_finished(sweep_dir: str, expected: int) -> None:
    """Refuse a sweep whose trials have not all ended (per Tune's experiment state)."""
    from raysweep.tracking.sync import list_dir, tune_statuses

    statuses = tune_statuses(sweep_dir, list_dir(sweep_dir))
    if not statuses:
        raise RaysweepError(f"{sweep_dir}: no Tune experiment state: the sweep never ran; start it with "
                            f"`raysweep resume {sweep_dir}` before extending it")
    open_trials = sorted(t for t, s in statuses.items() if s not in _ENDED)
    if open_trials or len(statuses) < expected:
        count = len(open_trials) or expected - len(statuses)
        raise RaysweepError(f"{sweep_dir}: {count} trials of the sweep have not finished: finish it with "
                            f"`raysweep resume {sweep_dir}` before extending it")


def plan_extension(sweep_dir: str, overrides: list[str]) -> tuple[SweepConfig, ExpandedSweep, NewCells]:
    """(grown sweep, its expansion, the new cells) after every check (module docstring); pure but
    for reading the sweep directory, so refusals happen before Ray starts."""
    old = load_sweep_dir(sweep_dir)
    if not overrides:
        raise RaysweepError("extend: give the grown values with --set, e.g. --set search.seeds=[0,1,2,3] or "
                            "--set search.grid.loss.lambda_neural=[0,0.5,1]")
    raw = old.to_dict()
    try:
        apply_sweep_overrides(raw, overrides)
    except RaysweepError as err:
        raise RaysweepError(f"--set: {err}") from None
    new = sweep_from_dict(raw, source="--set")
    changed = check_only_growth(old, new)
    if not SEARCH_MODES[old.search.mode].extendable:
        grows = " and ".join(spec.name for spec in SEARCH_MODES if spec.extendable)
        raise RaysweepError(f"search.mode {old.search.mode}: extend grows {grows} sweeps only (random draws and "
                            "Optuna studies have no fixed points to add): start a new sweep for more samples")
    old_expanded, grown = expand_sweep(old), expand_sweep(new)
    known = {identity(cell) for cell in old_expanded.cells}
    kept = {identity(cell) for cell in grown.cells}
    dropped = [cell for cell in old_expanded.cells if identity(cell) not in kept]
    if dropped:
        key = changed[0] if changed else "search"
        raise RaysweepError(
            f"{key}: the grown sweep leaves out {len(dropped)} trials already run (e.g. {dropped[0].label()}): keep "
            "every value the sweep has and add the new ones"
        )
    check_finished(sweep_dir, old_expanded.num_trials)
    added = [cell for cell in grown.cells if identity(cell) not in known]
    return new, grown, restricted(grown, added)


def extend_sweep(
    sweep_dir: str,
    overrides: list[str],
    address: str | None = None,
    callbacks: list[Any] | None = None,
    verbose: int = 1,
) -> SweepOutcome | None:
    """Run the trials `overrides` add to the finished sweep in `sweep_dir`; None when there are none.

    Returns the outcome of the new trials (one row each).

    Raises:
        RaysweepError: a refused change, an unfinished sweep or a directory that is not a sweep's.
    """
    from ray import tune

    from raysweep.tune.run import (
        build_callbacks,
        build_trainable,
        console_for,
        finish_sweep,
        fit_gracefully,
        start_ray_for,
    )
    sweep_dir = storage.resolve_sweep_dir(sweep_dir)
    storage.check_storage(sweep_dir)
    sweep, grown, new_cells = plan_extension(sweep_dir, overrides)
    if not new_cells.cells:
        print(f"raysweep extend: {sweep_dir}: nothing new: all {grown.num_trials} trials of the grown sweep ran "
              "already; nothing started", flush=True)
        return None
    mode = search_mode(sweep)
    mode.check(grown)
    plan = start_ray_for(sweep, address, sweep_dir, grown)
    storage.write_text(f"{sweep_dir}/{storage.SWEEP_FILE}", dump_sweep(sweep))
    write_extension(sweep_dir, grown, new_cells)
    reporter, console_callbacks = console_for(sweep, new_cells, verbose)
    tune_config, stop = mode.tune_config(new_cells, grown, sweep_dir, plan, extension=True)
    param_space = mode.param_space(grown)
    root, name = storage.split_sweep_dir(sweep_dir)
    all_callbacks = [*build_callbacks(sweep, sweep_dir, grown), *console_callbacks, *(callbacks or [])]
    run_config = tune.RunConfig(
        name=name, storage_path=root, stop=stop, callbacks=all_callbacks,
        verbose=console.tune_verbosity(verbose), progress_reporter=reporter,
        failure_config=tune.FailureConfig(max_failures=sweep.failure.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=sweep.checkpoint.num_to_keep),
    )
    print(f"raysweep: extending sweep {sweep.name}: {len(new_cells.cells)} new trials (of {grown.num_trials}), at most "
          f"{plan.max_concurrent} at once; results in {sweep_dir}", flush=True)
    tuner = tune.Tuner(build_trainable(sweep, sweep_dir, plan), param_space=param_space,
                       tune_config=tune_config, run_config=run_config)
    return finish_sweep(fit_gracefully(tuner, all_callbacks), sweep, new_cells, sweep_dir)


def record_claims_ledger(sweep_dir: str, values: dict[str, float | int]) -> SweepConfig:
    """Write `values` into the sweep's ``search.claims`` (``looks``, ``alpha_look``, ``alpha_spent``,
    ``alpha_bound``: the ledger of ``raysweep extend --until-decided``), in its ``sweep.yaml`` and in
    the ``sweep.yaml`` artifact of its MLflow parent run (what the claims read their settings from),
    so every later read and sequence accounts for the looks already taken. Returns the sweep as written."""
    from raysweep.tracking import runs, store

    sweep_dir = storage.resolve_sweep_dir(sweep_dir)
    sweep = load_sweep_dir(sweep_dir)
    claims = sweep.search.claims.model_copy(update=dict(values))
    sweep = sweep.model_copy(update={"search": sweep.search.model_copy(update={"claims": claims})})
    sweep = sweep_from_dict(sweep.to_dict(), source=f"{sweep_dir}/{storage.SWEEP_FILE}")  # validated as written
    storage.write_text(f"{sweep_dir}/{storage.SWEEP_FILE}", dump_sweep(sweep))
    root, name = storage.split_sweep_dir(sweep_dir)
    client = store.make_client(store.tracking_uri_for(root, sweep.tracking.uri))
    experiment = client.get_experiment_by_name(sweep.tracking.experiment or sweep.name)
    if experiment is not None:
        parent = store.find_parent_run(client, experiment.experiment_id, name, sweep_dir)
        if parent is not None:
            runs.log_sweep(client, parent.info.run_id, sweep.model_dump(mode="json"))
    return sweep
