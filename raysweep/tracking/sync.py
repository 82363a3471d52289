"""``raysweep sync SWEEP_DIR``: backfill a sweep's MLflow runs from the trials' own files.

The tracking callback (:mod:`raysweep.tracking.mlflow`) buffers what it cannot send while the
tracking server is down and replays it when the server is back; if the sweep ends first and the
server stays down past ``tracking.drain_timeout_s``, or the driver is killed, or the store refuses
an update, the sweep's journal says so (:mod:`raysweep.tracking.journal`; older sweeps:
``tracking_pending.json``). Nothing is lost even then, because every trial keeps its own record on
disk (or in the bucket), and this command writes MLflow from it:

- Tune's ``result.json`` in the trial's folder (every reported result, exactly what the callback
  logs) and the loop's ``metrics.jsonl`` for every validation ``result.json`` lacks (one reported
  just before a killed driver could record it): a step not logged yet for the run is logged with
  all its metrics, at the result's own timestamp;
- Tune's ``params.json`` and the loop's ``config.yaml``: params the run does not have yet;
- the loop's output files (:data:`raysweep.tracking.results.ARTIFACT_FILES`) and Tune's
  ``error.txt``: artifacts the run does not have yet, for trials that ended;
- Tune's experiment state (``experiment_state-*.json``): a trial that ended but whose run is
  still ``running`` gets the status the callback would have given it and is terminated; the
  parent run gets its per-status counts and is closed when every trial has ended;
- the same experiment state: each trial's failure count (tag ``raysweep.failures``, as the callback
  sets it on a retry), and the journal: the parent's ``raysweep.tracking_errors`` when the callback
  never set it.

Once MLflow holds the whole sweep (every trial ended), the journal and an older
``tracking_pending.json`` are removed.

Runs are found by their tags exactly as the callback finds them (:mod:`raysweep.tracking.store`:
the parent by sweep name and sweep directory, a child by trial id under the parent), so a run is
created only for a trial MLflow never saw. Everything is compared with what MLflow holds and only
what is missing is written: a second ``sync`` changes nothing, and a sync of a sweep whose
tracking never failed changes nothing either.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raysweep import storage
from raysweep.errors import RaysweepError
from raysweep.names import FINAL_SUMMARY, METRICS_LOG, TRIAL_CONFIG, WITHHELD, reconstructions_file
from raysweep.tracking import journal, runs, store
from raysweep.tracking.results import (
    ARTIFACT_FILES,
    OUTPUT_SUBDIRS,
    find_files,
    read_json,
    read_yaml_params,
    result_step,
    trial_status,
)
from raysweep.tracking.store import FAILURES_TAG, STATUS_TAG, WITHHELD_TAG

#: Tune's per-trial files the backfill reads.
TUNE_RESULTS = "result.json"
TUNE_PARAMS = "params.json"
TUNE_ERROR = "error.txt"
_ENDED = {"TERMINATED": False, "ERROR": True}  # Tune trial status -> ended in error
_RUNNING_TAGS = ("", "running", "retrying", "unknown")


@dataclass
class TrialRecord:
    """What a trial left in the sweep directory."""

    trial_id: str
    params: dict[str, Any]  # flat dotted trial params (Tune config through flat_trial_params, then config.yaml)
    results: list[dict[str, Any]]  # reported results, in order
    folders: list[Path]  # local folders that hold its output files
    tune_status: str | None  # TERMINATED, ERROR, RUNNING, PENDING... (None: no experiment state names it)
    num_failures: int = 0  # Tune's count of the trial's failures (retries), from its experiment state


@dataclass
class SyncReport:
    """What one ``sync`` wrote."""

    sweep_dir: str
    tracking_uri: str
    experiment: str
    trials: int = 0
    runs_created: int = 0
    steps: int = 0
    params: int = 0
    artifacts: int = 0
    images: int = 0
    statuses: int = 0
    tags: int = 0
    pending_removed: bool = False
    not_ended: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any((self.runs_created, self.steps, self.params, self.artifacts, self.images, self.statuses, self.tags))

    def line(self) -> str:
        head = f"raysweep sync: {self.sweep_dir} -> {self.tracking_uri} (experiment {self.experiment}), {self.trials} trials"
        if not self.changed:
            body = "already complete, nothing written"
        else:
            body = (f"created {self.runs_created} runs, logged {self.steps} steps, {self.params} params, "
                    f"{self.artifacts} artifacts, {self.images} images, set {self.statuses} statuses and {self.tags} tags")
        tail = f"; {len(self.not_ended)} trials have not ended (resume the sweep)" if self.not_ended else ""
        return f"{head}: {body}{tail}"


# ---------------------------------------------------------------------------- reading the sweep
def _read(path: str) -> str | None:
    try:
        return storage.read_text(path)
    except OSError:
        return None


def list_dir(sweep_dir: str) -> list[tuple[str, bool]]:
    """(name, is a folder) of every entry directly in `sweep_dir`."""
    if not storage.is_uri(sweep_dir):
        folder = storage.local_path(sweep_dir)
        return [(p.name, p.is_dir()) for p in sorted(folder.iterdir())] if folder.is_dir() else []
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(sweep_dir)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return sorted((info.base_name, info.type == pyarrow.fs.FileType.Directory) for info in infos)


def _json_lines(text: str | None) -> list[dict[str, Any]]:
    rows = []
    for line in (text or "").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line being written when the sweep stopped
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def tune_statuses(sweep_dir: str, entries: list[tuple[str, bool]],
                  failures: dict[str, int] | None = None) -> dict[str, str]:
    """Trial id -> status from every Tune experiment state in the sweep directory, older files
    first (an extended sweep has one per Tune experiment run in it; the newest word wins); each
    trial's failure count goes into `failures` when given."""
    statuses: dict[str, str] = {}
    for name, is_dir in entries:
        if is_dir or not (name.startswith("experiment_state") and name.endswith(".json")):
            continue
        try:
            state = json.loads(_read(f"{sweep_dir}/{name}") or "{}")
            for trial_json, runtime_json in state.get("trial_data", []):
                trial = json.loads(trial_json)
                statuses[str(trial["trial_id"])] = str(trial["status"])
                if failures is not None:
                    runtime = json.loads(runtime_json) if isinstance(runtime_json, str) else runtime_json
                    count = runtime.get("num_failures") if isinstance(runtime, dict) else None
                    if isinstance(count, int):
                        failures[str(trial["trial_id"])] = count
        except (ValueError, KeyError, TypeError):
            continue
    return statuses


FlatParams = Callable[[dict[str, Any]], dict[str, Any]]


def _flat_params(config: dict[str, Any], flat_params: FlatParams | None) -> dict[str, Any]:
    if flat_params is None:
        return {}
    try:
        return flat_params(config)
    except Exception:  # noqa: BLE001 - a config the schema no longer reads still has its config.yaml
        return {}


def _output_folders(sweep_dir: str, sweep_name: str, trial_id: str) -> list[Path]:
    """Local folders holding the trial's output files (fetched from object storage when needed)."""
    trial_dir = storage.trial_dir(sweep_dir, trial_id)
    if not storage.is_uri(sweep_dir):
        base = storage.local_path(trial_dir)
        return [base / sub if sub else base for sub in OUTPUT_SUBDIRS if (base / sub).is_dir()]
    local = storage.driver_outputs_dir(sweep_name, trial_id)
    storage.download_outputs(f"{trial_dir}/{storage.TRIAL_OUTPUT_DIR}", local)
    error = _read(f"{trial_dir}/{TUNE_ERROR}")
    if error is not None:
        (local / TUNE_ERROR).write_text(error)
    return [local]


def _with_loop_validations(results: list[dict[str, Any]], metrics_file: Path) -> list[dict[str, Any]]:
    """Tune's results plus every validation of the loop's ``metrics.jsonl`` whose step they lack.

    A validation the trial reported (and so checkpointed) just before its driver was killed reaches
    neither MLflow nor Tune's ``result.json``, and a trial continuing from that checkpoint does not
    report it again: the loop's own log is then its only record. Such rows carry the file's
    modification time as their timestamp when they have none of their own.
    """
    seen = {result_step(r) for r in results}
    stamp = metrics_file.stat().st_mtime
    extra = []
    for row in _json_lines(metrics_file.read_text()):
        if "step" in row and result_step(row) not in seen:
            seen.add(result_step(row))
            extra.append({"timestamp": stamp, **row})
    return results + extra


def read_trials(sweep_dir: str, sweep_name: str, flat_params: FlatParams | None = None) -> list[TrialRecord]:
    """Every trial folder of the sweep directory (one holding Tune's ``params.json``).

    `flat_params` turns Tune's trial config into the run's flat params (the sweep layer passes
    :func:`raysweep.tune.space.flat_trial_params`); without it only the loop's ``config.yaml`` counts.
    """
    entries = list_dir(sweep_dir)
    failures: dict[str, int] = {}
    statuses = tune_statuses(sweep_dir, entries, failures)
    records = []
    for name, is_dir in entries:
        if not is_dir:
            continue
        trial_dir = storage.trial_dir(sweep_dir, name)
        params_text = _read(f"{trial_dir}/{TUNE_PARAMS}")
        if params_text is None:
            continue
        try:
            config = json.loads(params_text)
        except ValueError:
            config = {}
        folders = _output_folders(sweep_dir, sweep_name, name)
        found = find_files(folders, (TRIAL_CONFIG, METRICS_LOG))
        params = {**_flat_params(config if isinstance(config, dict) else {}, flat_params), **read_yaml_params(found.get(TRIAL_CONFIG))}
        results = _json_lines(_read(f"{trial_dir}/{TUNE_RESULTS}"))
        if METRICS_LOG in found:
            results = _with_loop_validations(results, found[METRICS_LOG])
        records.append(TrialRecord(name, params, results, folders, statuses.get(name), failures.get(name, 0)))
    return records


# ------------------------------------------------------------------------------- writing MLflow
class _Syncer:
    def __init__(self, client: Any, experiment_id: str, report: SyncReport) -> None:
        self.client = client
        self.experiment_id = experiment_id
        self.report = report

    def set_tag(self, run: Any, key: str, value: str) -> None:
        if run.data.tags.get(key) != value:
            self.client.set_tag(run.info.run_id, key, value)
            self.report.tags += 1

    def parent(self, sweep_name: str, key: str, sweep_config: dict[str, Any]) -> Any:
        parent, created = runs.find_or_create_parent(self.client, self.experiment_id, sweep_name, key, sweep_config)
        if not created:
            return parent
        self.report.runs_created += 1
        return self.client.get_run(parent.info.run_id)

    def child(self, existing: dict[str, Any], parent_id: str, sweep_name: str, trial_id: str,
              run_name: str | None = None) -> Any:
        run, created = runs.find_or_create_child(
            self.client, self.experiment_id, parent_id, sweep_name, trial_id, lambda: run_name or trial_id, existing)
        if not created:
            return run
        self.report.runs_created += 1
        return self.client.get_run(run.info.run_id)

    def params(self, run: Any, params: dict[str, Any]) -> None:
        logged, tagged = runs.log_params(self.client, run, params)
        self.report.params += logged
        self.report.tags += tagged

    def metrics(self, run: Any, results: list[dict[str, Any]]) -> None:
        run_id = run.info.run_id
        logged = {int(m.step) for m in self.client.get_metric_history(run_id, "step")}
        metrics: list[Any] = []
        for result in results:
            step = result_step(result)
            if step in logged:
                continue
            logged.add(step)  # the first result of a step is the one kept, as the callback keeps it
            stamp = result.get("timestamp")
            millis = int(float(stamp) * 1000) if isinstance(stamp, int | float) and math.isfinite(stamp) else 0
            metrics.extend(runs.result_metrics(result, step, millis))
            self.report.steps += 1
        runs.log_metrics(self.client, run_id, metrics)
        if results:
            latest = max(results, key=result_step)
            withheld = latest.get(WITHHELD)
            if isinstance(withheld, dict) or WITHHELD_TAG in run.data.tags or any(
                    isinstance(r.get(WITHHELD), dict) for r in results):
                self.set_tag(run, WITHHELD_TAG, runs.withheld_text(withheld))

    def reconstructions(self, run: Any, results: list[dict[str, Any]], folders: list[Path]) -> None:
        """Each validation's reconstruction grid the trial's folders hold and the run lacks, as an
        MLflow image at its step (as the callback logs it)."""
        steps = sorted({result_step(result) for result in results})
        if not steps:
            return
        logged = runs.logged_reconstruction_steps(self.client, run.info.run_id)
        for step in steps:
            name = reconstructions_file(step)
            path = find_files(folders, (name,)).get(name)
            if step not in logged and path is not None:
                runs.log_reconstructions(self.client, run.info.run_id, path, step)
                self.report.images += 1

    def artifacts(self, run: Any, folders: list[Path], error: bool) -> None:
        found = find_files(folders, ARTIFACT_FILES + ((TUNE_ERROR,) if error else ()))
        present = {Path(info.path).name for info in self.client.list_artifacts(run.info.run_id)}
        for name, path in found.items():
            if name not in present:
                self.client.log_artifact(run.info.run_id, str(path))
                self.report.artifacts += 1

    def status(self, run: Any, trial: TrialRecord, error: bool) -> None:
        current = run.data.tags.get(STATUS_TAG, "")
        if current not in _RUNNING_TAGS and run.info.status != "RUNNING":
            return  # the callback closed it: its word stands
        if error:
            status = "error"
        else:
            final = read_json(find_files(trial.folders, (FINAL_SUMMARY,)).get(FINAL_SUMMARY))
            last = max(trial.results, key=result_step) if trial.results else {}
            status = trial_status(final, last, trial.params, stopped_by_tune=final is None)
        if runs.end_trial(self.client, run.info.run_id, status, current=(current, run.info.status)):
            self.report.statuses += 1

    def failures(self, run: Any, trial: TrialRecord) -> None:
        """The trial's failure count, as the callback tags it on each retry (none when it never failed)."""
        if trial.num_failures > 0:
            self.set_tag(run, FAILURES_TAG, str(trial.num_failures))

    def close_parent(self, parent_id: str, refused: int) -> None:
        """Per-status counts, the count of refused updates (when the callback never set it) and the
        parent closed."""
        tags, statuses = runs.close_parent(self.client, self.experiment_id, parent_id, refused, keep_errors=True)
        self.report.tags += tags
        self.report.statuses += statuses


@dataclass(frozen=True)
class SweepRecord:
    """What sync needs to know of a sweep, read by the sweep layer from its ``sweep.yaml``
    (:func:`raysweep.tune.backfill.sync_sweep_dir`), so this layer never reads the sweep schema.

    Attributes:
        name: the sweep's name (its parent run's tag).
        tracking_uri: the sweep's ``tracking.uri`` (None: ``<storage>/mlflow.db``).
        experiment: the MLflow experiment (the sweep's ``tracking.experiment``, else its name).
        config: the resolved sweep as plain JSON (the parent run's params).
        flat_params: Tune's trial config -> the run's flat params.
        run_name: (trial id, the run's flat params) -> the name of a child run sync creates, as the
            tracking callback names it (the sweep layer's :class:`raysweep.tune.run_names.RunNamer`).
    """

    name: str
    tracking_uri: str | None
    experiment: str
    config: dict[str, Any]
    flat_params: FlatParams | None = None
    run_name: Callable[[str, dict[str, Any]], str] | None = None


def sync_sweep(sweep_dir: str, sweep: SweepRecord, tracking_uri: str | None = None) -> SyncReport:
    """Write into MLflow whatever of the sweep in `sweep_dir` it lacks (module docstring).

    Args:
        sweep_dir: the sweep directory (``<storage>/<name>``, local or object storage), resolved.
        sweep: what the sweep layer read of the sweep (:class:`SweepRecord`).
        tracking_uri: the store to write (default: the sweep's ``tracking.uri``, else
            ``<storage>/mlflow.db``, as the sweep used).

    Raises:
        RaysweepError: not a sweep directory, or a store that does not answer (run sync again
            once it does: what was written stays written).
    """
    root, name = storage.split_sweep_dir(sweep_dir)
    uri = store.tracking_uri_for(root, tracking_uri or sweep.tracking_uri)
    experiment = sweep.experiment
    report = SyncReport(sweep_dir=sweep_dir, tracking_uri=uri, experiment=experiment)
    trials = read_trials(sweep_dir, sweep.name, sweep.flat_params)
    report.trials = len(trials)
    store.use_driver_http_defaults()
    client = store.make_client(uri)
    try:
        experiment_id = store.get_or_create_experiment(client, experiment)
        syncer = _Syncer(client, experiment_id, report)
        parent = syncer.parent(sweep.name, storage.parent_run_key(root, name), sweep.config)
        parent_id = parent.info.run_id
        existing = runs.children_by_trial(client, experiment_id, parent_id)
        for trial in trials:
            name = sweep.run_name(trial.trial_id, trial.params) if sweep.run_name is not None else None
            run = syncer.child(existing, parent_id, sweep.name, trial.trial_id, run_name=name)
            syncer.params(run, trial.params)
            syncer.metrics(run, trial.results)
            syncer.reconstructions(run, trial.results, trial.folders)
            syncer.failures(run, trial)
            ended = trial.tune_status in _ENDED or (
                trial.tune_status is None and FINAL_SUMMARY in find_files(trial.folders, (FINAL_SUMMARY,)))
            if not ended:
                report.not_ended.append(trial.trial_id)
                continue
            error = _ENDED.get(trial.tune_status or "", False)
            run = client.get_run(run.info.run_id)
            syncer.artifacts(run, trial.folders, error)
            syncer.status(run, trial, error)
        if not report.not_ended:
            syncer.close_parent(parent_id, journal.read_state(sweep_dir).refused)
    except RaysweepError:
        raise
    except Exception as err:
        if store.is_unreachable(err):
            raise RaysweepError(
                f"{store.unreachable_message(uri, err)}; what was written stays: run `raysweep sync {sweep_dir}` "
                "again once it answers") from None
        raise
    if not report.not_ended:
        report.pending_removed = journal.remove(sweep_dir)
    return report
