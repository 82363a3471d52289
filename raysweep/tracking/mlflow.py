"""Every Tune trial of a sweep lands in MLflow exactly once: :class:`MlflowTrackingCallback`.

The callback runs in the Tune driver, so each run has exactly one writer (SQLite sees no lock
contention from trial processes), and uses an explicit :class:`MlflowClient` (no global fluent
state). Per sweep it opens one parent run; per trial one child run.

No duplicates, no loss:

- A parent run is found again by its tags ``raysweep.sweep`` + ``raysweep.storage`` (the sweep's
  experiment folder), so a resumed sweep (``Tuner.restore``) continues it.
- A child run is found again by ``raysweep.trial_id`` under that parent, so a retried
  (``FailureConfig(max_failures)``), resumed or restored trial continues its run.
- Metrics are logged with ``step=`` the training step (``result["step"]``; Tune's
  ``training_iteration`` when a trainable reports no step). A trial restored from a checkpoint
  re-reports the validations after that checkpoint; a step at or below the last one already logged
  for the run is skipped, so every metric has one point per validation step and its history
  continues where it was. The first value logged for a step is the one kept (on CPU a resumed run
  reproduces it exactly anyway).

Tracking never blocks the sweep: the Tune hooks only queue the work (a snapshot of the trial and
its result) for one writer thread of the driver (:class:`TrackingWriter`), which performs the
MLflow calls in order, so each run still has one writer and the step rule above holds
(:mod:`raysweep.tracking.writer`: an outage is retried for as long as it lasts while trials keep
training, a refused update is tried three times and journaled as unsent, at most
:data:`~raysweep.tracking.writer.MAX_QUEUED` updates are held in memory and the rest spill to the
sweep's journal, :mod:`raysweep.tracking.journal`). When the sweep ends the queue is drained for at
most ``tracking.drain_timeout_s``; what is still unsent then is in the journal with its reason, one
line says so, and ``raysweep sync SWEEP_DIR`` (:mod:`raysweep.tracking.sync`) backfills MLflow from
the trials' own files. Only opening the
parent run (``setup``, before any trial starts) is synchronous, so a wrong or dead tracking URI
still stops the sweep at once with a one-line error.

Statuses (tag ``raysweep.status``): ``running``, ``retrying`` (failed, Tune will retry it),
``finished``, ``diverged`` (the loss became non-finite: from the trial's ``final.json``),
``early_stopped`` (stopped by the scheduler, e.g. ASHA, or a stopper) and ``error``.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ray import tune

from raysweep.errors import RaysweepError
from raysweep.names import FINAL_SUMMARY, TRIAL_CONFIG, WITHHELD, reconstructions_file
from raysweep.storage import is_uri, local_path, parent_run_key
from raysweep.tracking import runs, store
from raysweep.tracking.journal import Journal, journal_path
from raysweep.tracking.results import (
    ARTIFACT_FILES,
    find_files,
    flatten_params,
    local_trial_dirs,
    read_json,
    read_yaml_params,
    result_step,
    trial_dirs,
    trial_status,
)
from raysweep.tracking.store import (
    STATUS_TAG,
)
from raysweep.tracking.trial_view import TrialView, view_from_record, view_of
from raysweep.tracking.writer import Job, TrackingWriter

__all__ = ["ARTIFACT_FILES", "MlflowTrackingCallback", "TrackingWriter", "flatten_params", "mlflow_callback"]

logger = logging.getLogger(__name__)

_BATCH_METRICS, _BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits

ParamsFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
OutputDirsFn = Callable[[Any], Sequence[str | Path]]
#: (trial id, the trial's Tune config) -> its child run's name (the sweep layer's readable names).
RunNameFn = Callable[[str, Mapping[str, Any]], str]

#: Default of ``tracking.drain_timeout_s``: how long the end of a sweep waits for queued tracking.
DRAIN_TIMEOUT_S = 300.0


class MlflowTrackingCallback(tune.Callback):
    """Tune callback that writes a sweep into MLflow (see the module docstring).

    Args:
        tracking_uri: MLflow tracking URI (see :func:`raysweep.tracking.store.tracking_uri_for`).
        experiment: MLflow experiment name (created once; concurrent creation is retried).
        sweep_name: the sweep's name (tag ``raysweep.sweep``, the parent run's name).
        storage_path: the sweep's experiment folder (``<storage>/<name>``); with `sweep_name`, the
            key of the parent run.
        params_fn: maps a trial's Tune config to flat dotted params (default
            :func:`flatten_params`). The trial's own ``config.yaml`` (written by the training loop
            before its first report), when found on the driver or in the final checkpoint,
            overlays them with every key as trained, defaults included, so MLflow's compare view
            can sort and filter by any dotted key.
        sweep_config: the sweep's validated configuration, logged as ``sweep.yaml`` on the parent.
        output_dirs_fn: maps a trial to folders on the driver that may hold its output files
            (``final.json``, ``config.yaml``, plots), searched before the trial's own folders
            (``trial.local_path``, ``trial.path`` and their ``train/``) and its last checkpoint.
        drain_timeout_s: how long the end of the sweep waits for queued tracking updates while the
            store is unreachable before it journals them as unsent (``<storage_path>/tracking_journal.jsonl``)
            for ``raysweep sync`` (``tracking.drain_timeout_s``).
        run_name_fn: names a new child run from its trial id and Tune config (the sweep layer's
            :class:`raysweep.tune.run_names.RunNamer`, which sync uses too); default: the trial id.

    Example::

        callback = MlflowTrackingCallback(tracking_uri_for(storage, None), "quickstart",
                                          "quickstart", f"{storage}/quickstart")
        tune.Tuner(trainable, run_config=tune.RunConfig(callbacks=[callback], ...))
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        sweep_name: str,
        storage_path: str | Path,
        params_fn: ParamsFn | None = None,
        sweep_config: Mapping[str, Any] | None = None,
        output_dirs_fn: OutputDirsFn | None = None,
        drain_timeout_s: float = DRAIN_TIMEOUT_S,
        run_name_fn: RunNameFn | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.run_name_fn = run_name_fn
        self.drain_timeout_s = float(drain_timeout_s)
        self._writer: TrackingWriter | None = None
        self.journal_file = str(journal_path(str(storage_path)))  # the sweep's tracking journal
        self.output_dirs_fn = output_dirs_fn
        self.experiment = experiment
        self.sweep_name = sweep_name
        self.storage_path = str(storage_path)
        self.params_fn = params_fn or flatten_params
        self.sweep_config = dict(sweep_config) if sweep_config is not None else None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._client: Any = None
        self._runs: dict[str, str] = {}  # trial id -> child run id
        self._last_step: dict[str, float] = {}  # child run id -> last logged step
        self._image_step: dict[str, float] = {}  # child run id -> last step whose reconstructions were logged
        self._stopped: set[str] = set()  # child run ids whose trial Tune decided to stop
        self._withheld_tagged: dict[str, bool] = {}  # child run id -> its withheld tag lists a metric
        self._params_tried: set[str] = set()  # child run ids whose params were logged once
        self._params_full: set[str] = set()  # ... and those logged from the trial's config.yaml
        self.errors = 0  # tracking writes that failed (logged, never raised into the sweep)
        self.unsent = 0  # updates not sent when the sweep ended (journaled as unsent)

    # ------------------------------------------------------------------ pickling and state
    # No get_state/set_state: MLflow itself is the state. A restored driver finds the parent and
    # child runs by their tags and the last logged step from the run's own "step" metric; a copy
    # saved with Tune's experiment state could lag behind what was logged after it and let a
    # re-reported step in twice.
    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (callbacks included) for Tuner.restore; a client is not
        # picklable, and cached ids are dropped so the restored copy looks them up afresh.
        state = dict(self.__dict__)
        state.update(_client=None, _writer=None, experiment_id=None, parent_run_id=None, _runs={}, _last_step={},
                     _image_step={},
                     _stopped=set(), _params_tried=set(), _params_full=set(), _withheld_tagged={})
        return state

    # ------------------------------------------------------------------ parent run
    @property
    def client(self) -> Any:
        """The :class:`MlflowClient` of this callback (created on first use)."""
        if self._client is None:
            self._client = store.make_client(self.tracking_uri)
        return self._client

    def setup(self, **info: Any) -> None:
        """Open the experiment and the sweep's parent run (before any trial starts, so a wrong
        tracking URI stops the sweep at once with a one-line error), then start the writer."""
        store.use_driver_http_defaults()
        try:
            self._ensure_parent()
        except RaysweepError:
            raise
        except Exception as err:
            if store.is_unreachable(err):
                raise RaysweepError(store.unreachable_message(self.tracking_uri, err)) from None
            raise
        self._writer_thread()

    def _writer_thread(self) -> TrackingWriter:
        if self._writer is None:
            self._writer = TrackingWriter(self.tracking_uri, self._count_error, journal=Journal(self.journal_file),
                                          rebuild=self._rebuild)
        return self._writer

    def _count_error(self) -> None:
        self.errors += 1

    def _submit(self, what: str, trial: Any, fn: Callable[[TrialView], Any], **record: Any) -> None:
        """Queue `fn` on a snapshot of `trial` for the writer, with `record` (``kind`` and its data,
        JSON) from which :meth:`_rebuild` makes it again after a spill; a failure here is logged,
        never raised."""
        try:
            view = view_of(trial)
        except Exception:  # noqa: BLE001 - a tracking failure must not kill the sweep's trials
            self.errors += 1
            logger.exception("raysweep tracking: %s of trial %s not queued", what, getattr(trial, "trial_id", trial))
            return
        if record.get("kind") != "close":
            view.last_result = {}  # only closing a run reads it: not held (or journaled) once per result
        self._writer_thread().submit(what, view.trial_id, lambda: fn(view), record={**record, "view": view})

    def _rebuild(self, record: dict[str, Any]) -> Callable[[], Any]:
        """The job of a record read back from the journal (see :meth:`_submit`)."""
        kind = record["kind"]
        if kind == "end":
            return self._close_parent
        view = view_from_record(record["view"])
        if kind == "open":
            return lambda: self._open(view)
        if kind == "result":
            return lambda: self.log_result(view, record["result"], record.get("timestamp_ms"))
        if kind == "recover":
            return lambda: self._recover(view)
        if kind == "close":
            return lambda: self._close(view, error=bool(record["error"]))
        raise ValueError(f"unknown tracking job kind {kind!r}")

    def _ensure_parent(self) -> str:
        if self.parent_run_id is not None and self.experiment_id is not None:
            return self.parent_run_id
        self.experiment_id = store.get_or_create_experiment(self.client, self.experiment)
        parent, created = runs.find_or_create_parent(
            self.client, self.experiment_id, self.sweep_name, self.storage_path, self.sweep_config)
        if not created:  # a resumed sweep; the sweep as it is now (`raysweep extend` may have grown it)
            runs.reopen_parent(self.client, parent.info.run_id, self.sweep_config)
        self.parent_run_id = parent.info.run_id
        return self.parent_run_id

    # ------------------------------------------------------------------ child runs
    def run_id_for(self, trial: Any) -> str:
        """The child run of `trial`: cached, else found by its trial-id tag, else created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        parent = self._ensure_parent()
        run, created = runs.find_or_create_child(
            self.client, self.experiment_id, parent, self.sweep_name, trial_id,
            lambda: self.run_name_fn(trial_id, trial.config) if self.run_name_fn is not None else str(trial))
        run_id = run.info.run_id
        last = None if created else run.data.metrics.get("step")  # the latest value = the highest step logged
        if last is not None:
            self._last_step[run_id] = max(self._last_step.get(run_id, -math.inf), last)
            self._image_step[run_id] = max(self._image_step.get(run_id, -math.inf), last)
        self._runs[trial_id] = run_id
        return run_id

    def _params(self, trial: Any) -> dict[str, Any]:
        try:
            return dict(self.params_fn(trial.config))
        except Exception:  # noqa: BLE001 - a params_fn bug must not lose the trial's metrics
            logger.exception("raysweep tracking: params_fn failed for trial %s", trial.trial_id)
            return {}

    def sync_params(self, trial: Any, run_id: str, folders: list[Path]) -> None:
        """Log the trial's params: its Tune config (through `params_fn`), overlaid by its own
        ``config.yaml`` when found in `folders` (every key, defaults included, exactly as trained),
        so MLflow's compare view can sort by any dotted key. Keys the run has already are kept
        (MLflow params are immutable); the dataset, loss and model tags are set from them."""
        if run_id in self._params_full:
            return
        from_file = read_yaml_params(find_files(folders, (TRIAL_CONFIG,)).get(TRIAL_CONFIG))
        params = {**self._params(trial), **from_file}
        runs.log_params(self.client, self.client.get_run(run_id), params)
        self._params_tried.add(run_id)
        if from_file:
            self._params_full.add(run_id)

    def _extra_dirs(self, trial: Any) -> list[str | Path]:
        # Called on the writer thread: the hook may fetch files (e.g. from object storage).
        if self.output_dirs_fn is None:
            return []
        try:
            return list(self.output_dirs_fn(trial))
        except Exception:  # noqa: BLE001 - a hook bug must not lose the trial's metrics
            logger.exception("raysweep tracking: output_dirs_fn failed for trial %s", trial.trial_id)
            return []

    def _open(self, trial: Any) -> None:
        run_id = self.run_id_for(trial)
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, STATUS_TAG, "running")

    # ------------------------------------------------------------------ Tune hooks
    # Each hook only queues its work (module docstring); the writer thread does it in order.
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Create (or continue) the trial's child run and tag it running."""
        self._submit("start", trial, self._open, kind="open")

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial restored from a checkpoint continues its child run."""
        self._submit("restore", trial, self._open, kind="open")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log every numeric metric of one validation at ``step=`` its training step (one
        ``log_batch`` call); steps already logged for the run are skipped (module docstring)."""
        snapshot, queued_ms = dict(result), int(time.time() * 1000)
        self._submit("result", trial, lambda view: self.log_result(view, snapshot, queued_ms), kind="result",
                     result=snapshot, timestamp_ms=queued_ms)

    def log_result(self, trial: Any, result: Mapping[str, Any], timestamp_ms: int | None = None) -> bool:
        """Log one result (with `timestamp_ms`, when it was reported; default now); returns False
        when its step was logged before and it was skipped."""
        run_id = self.run_id_for(trial)
        if run_id not in self._params_tried:  # the trainer wrote config.yaml before its first report
            self.sync_params(trial, run_id, local_trial_dirs(trial, self._extra_dirs(trial)))
        if result.get("done"):
            # Tune sets done on a result before the callbacks see it only when a scheduler or a
            # stopper decided to stop the trial there; a trainable that returns is never seen so.
            self._stopped.add(run_id)
        step = result_step(result)
        if step <= self._last_step.get(run_id, -math.inf):
            logger.debug("trial %s: step %d already logged; skipped", trial.trial_id, step)
            return False
        now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
        runs.log_metrics(self.client, run_id, runs.result_metrics(result, step, now))
        self._log_reconstructions(trial, run_id, step, now)
        withheld = result.get(WITHHELD)
        if isinstance(withheld, Mapping) or self._withheld_tagged.get(run_id):
            # Metrics left out as unsound are absent from the metrics; the reason goes in a tag
            # that always describes the latest validation.
            runs.set_withheld(self.client, run_id, withheld)
            self._withheld_tagged[run_id] = isinstance(withheld, Mapping) and bool(withheld)
        self._last_step[run_id] = step
        return True

    def _log_reconstructions(self, trial: Any, run_id: str, step: int, timestamp_ms: int) -> None:
        """The validation's reconstruction grid (``train.log_images``; the loop writes it before it
        reports), as an MLflow image at `step`: from the trial's folders on the driver, else those
        ``output_dirs_fn`` fetches (object storage). A step whose grid was logged is not logged again
        (a retried job), and a trial without grids logs none."""
        if step <= self._image_step.get(run_id, -math.inf):
            return
        name = reconstructions_file(step)
        path = find_files(local_trial_dirs(trial), (name,)).get(name)
        if path is None and self.output_dirs_fn is not None:
            path = find_files(local_trial_dirs(trial, self._extra_dirs(trial)), (name,)).get(name)
        if path is not None:
            runs.log_reconstructions(self.client, run_id, path, step, timestamp_ms)
            self._image_step[run_id] = step

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial failed and Tune will retry it: tag ``retrying`` and the failure count."""
        self._submit("recover", trial, self._recover, kind="recover")

    def _recover(self, trial: TrialView) -> None:
        run_id = self.run_id_for(trial)
        self.client.set_tag(run_id, STATUS_TAG, "retrying")
        runs.set_failures(self.client, run_id, trial.num_failures)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Finished, diverged or stopped early: status tag, artifacts, run terminated."""
        self._submit("complete", trial, lambda view: self._close(view, error=False), kind="close", error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Failed for good (retries exhausted): status ``error``, artifacts and Tune's error.txt."""
        self._submit("error", trial, lambda view: self._close(view, error=True), kind="close", error=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close the parent run with a count of trials per status, after every queued update; if
        the store stays unreachable for ``drain_timeout_s``, list what is unsent (module docstring)."""
        writer = self._writer_thread()
        writer.submit("experiment end", "sweep", self._close_parent, record={"kind": "end"})
        left = writer.drain(self.drain_timeout_s)
        spilled = writer.spilled  # still in the journal when the drain gave up
        self._writer = None
        if left or spilled:
            self.unsent = len(left) + spilled
            self._report_unsent(left, spilled)

    def _close_parent(self) -> None:
        if self.parent_run_id is None:
            return
        runs.close_parent(self.client, self.experiment_id, self.parent_run_id, self.errors)

    def _report_unsent(self, left: list[Job], spilled: int) -> None:
        """Say in one line what the writer journaled as unsent when the sweep ended."""
        trials = {job.trial_id for job in left}
        sweep_dir = self.storage_path if is_uri(self.storage_path) else str(local_path(self.storage_path))
        print(f"raysweep: tracking at {self.tracking_uri} still unreachable after {self.drain_timeout_s:g} s: "
              f"{self.unsent} updates ({len(trials)} trials in memory, {spilled} spilled) not sent, journaled in "
              f"{self.journal_file}; the trials' files hold them: run `raysweep sync {sweep_dir}` once it answers",
              file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ ending a trial
    def _close(self, trial: Any, error: bool) -> None:
        run_id = self.run_id_for(trial)
        with trial_dirs(trial, self._extra_dirs(trial)) as folders:
            found = find_files(folders, ARTIFACT_FILES + (("error.txt",) if error else ()))
            for path in found.values():
                self.client.log_artifact(run_id, str(path))
            self.sync_params(trial, run_id, folders)
            if error:
                status = "error"
            else:
                params = {**self._params(trial), **read_yaml_params(found.get(TRIAL_CONFIG))}
                status = trial_status(
                    read_json(found.get(FINAL_SUMMARY)), getattr(trial, "last_result", None) or {}, params,
                    run_id in self._stopped,
                )
        runs.end_trial(self.client, run_id, status)


def mlflow_callback(
    storage_dir: str | Path,
    sweep_name: str,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    params_fn: ParamsFn | None = None,
    sweep_config: Mapping[str, Any] | None = None,
    output_dirs_fn: OutputDirsFn | None = None,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
    run_name_fn: RunNameFn | None = None,
) -> MlflowTrackingCallback:
    """The callback the sweep runner adds to ``RunConfig(callbacks=...)``.

    Args:
        storage_dir: the sweep's ``--storage`` folder; the default store is ``<storage_dir>/mlflow.db``.
        sweep_name: the sweep's (Tune experiment's) name; the experiment folder is
            ``<storage_dir>/<sweep_name>``, the parent run's key
            (:func:`raysweep.storage.parent_run_key`).
        tracking_uri: ``tracking.uri`` of the sweep file (None: the default store).
        experiment: ``tracking.experiment`` (None: the sweep's name).
        params_fn: see :class:`MlflowTrackingCallback`.
        sweep_config: see :class:`MlflowTrackingCallback`.
        output_dirs_fn: see :class:`MlflowTrackingCallback`.
        drain_timeout_s: see :class:`MlflowTrackingCallback` (``tracking.drain_timeout_s``).
        run_name_fn: see :class:`MlflowTrackingCallback`.
    """
    uri = store.tracking_uri_for(storage_dir, tracking_uri)
    return MlflowTrackingCallback(
        uri, experiment or sweep_name, sweep_name, parent_run_key(storage_dir, sweep_name), params_fn=params_fn,
        sweep_config=sweep_config, output_dirs_fn=output_dirs_fn, drain_timeout_s=drain_timeout_s,
        run_name_fn=run_name_fn,
    )
