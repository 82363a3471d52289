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
MLflow calls in order, so each run still has one writer and the step rule above holds. While the
tracking server is unreachable the writer keeps the queue and retries with a capped back-off;
trials keep training. When the sweep ends the queue is drained for at most
``tracking.drain_timeout_s``; what is still unsent then is listed in ``tracking_pending.json`` in
the sweep directory, one line says so, and ``raysweep sync SWEEP_DIR``
(:mod:`raysweep.tracking.sync`) backfills MLflow from the trials' own files. Only opening the
parent run (``setup``, before any trial starts) is synchronous, so a wrong or dead tracking URI
still stops the sweep at once with a one-line error.

Statuses (tag ``raysweep.status``): ``running``, ``retrying`` (failed, Tune will retry it),
``finished``, ``diverged`` (the loss became non-finite: from the trial's ``final.json``),
``early_stopped`` (stopped by the scheduler, e.g. ASHA, or a stopper) and ``error``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from raysweep.errors import RaysweepError
from raysweep.names import WITHHELD
from raysweep.storage import is_uri, local_path, parent_run_key, write_text
from raysweep.tracking import store
from raysweep.tracking.results import (
    ARTIFACT_FILES,
    MLFLOW_STATUS,
    find_files,
    flatten_params,
    local_trial_dirs,
    numeric_metrics,
    param_text,
    read_json,
    read_yaml_params,
    result_step,
    trial_dirs,
    trial_status,
)
from raysweep.tracking.store import (
    CONFIG_TAGS,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    ROLE_TRIAL,
    STATUS_TAG,
    STORAGE_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    WITHHELD_TAG,
)

__all__ = ["ARTIFACT_FILES", "MlflowTrackingCallback", "TrackingWriter", "flatten_params", "mlflow_callback"]

logger = logging.getLogger(__name__)

_BATCH_METRICS, _BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits

ParamsFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
OutputDirsFn = Callable[[Any], Sequence[str | Path]]

#: Default of ``tracking.drain_timeout_s``: how long the end of a sweep waits for queued tracking.
DRAIN_TIMEOUT_S = 300.0
#: What the end of a sweep writes into the sweep directory when tracking could not be drained.
PENDING_FILE = "tracking_pending.json"
_MAX_BACKOFF_S = 10.0  # longest pause between two tries of a job while the server is down
_REFUSED_ATTEMPTS = 3  # tries of a job the store refuses (not an outage) before it is dropped


@dataclass
class TrialView:
    """What the tracking writer needs of a Tune trial, copied when a hook fires: Tune's trial
    object keeps changing on Tune's thread while the writer works through its queue on its own."""

    trial_id: str
    name: str
    config: dict[str, Any]
    local_path: str | None = None
    path: str | None = None
    last_result: dict[str, Any] = field(default_factory=dict)
    checkpoint: Any = None
    num_failures: Any = ""

    def __str__(self) -> str:
        return self.name


@dataclass
class _Job:
    what: str
    trial_id: str
    fn: Callable[[], Any]


class TrackingWriter:
    """One background thread performing a callback's MLflow calls in the order they were queued.

    A job that fails because the store is unreachable (:func:`raysweep.tracking.store.is_unreachable`)
    stays at the head of the queue and is tried again after a back-off capped at 10 s, so per-run
    order is kept and nothing is skipped; one line says when an outage starts and ends. A job the
    store refuses is tried three times, then logged, counted (`on_error`) and dropped, so one bad
    request cannot hold back the rest. Jobs must be safe to repeat after a failure part-way
    (the callback's are: runs are found by their tags before one is created, metrics carry the
    timestamp they were queued with, so a repeated write is the same row).
    """

    def __init__(self, uri: str, on_error: Callable[[], None], max_backoff_s: float = _MAX_BACKOFF_S) -> None:
        self.uri = uri
        self._on_error = on_error
        self._max_backoff_s = max_backoff_s
        self._queue: deque[_Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._abandoned = False
        self._outage_since: float | None = None
        self._thread = threading.Thread(target=self._loop, name="raysweep-tracking-writer", daemon=True)
        self._thread.start()

    def submit(self, what: str, trial_id: str, fn: Callable[[], Any]) -> None:
        """Queue `fn` (one MLflow update of trial `trial_id`, described by `what`); never blocks."""
        with self._cond:
            self._queue.append(_Job(what, trial_id, fn))
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        """Jobs queued or in progress."""
        with self._cond:
            return len(self._queue)

    @property
    def in_outage(self) -> bool:
        """Whether the last try found the store unreachable."""
        return self._outage_since is not None

    def drain(self, timeout_s: float) -> list[_Job]:
        """Wait up to `timeout_s` for every queued job, then stop the thread; returns the jobs not
        done (empty when all went through)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            while self._queue and (remaining := deadline - time.monotonic()) > 0:
                self._cond.wait(remaining)
            left = list(self._queue)
            self._abandoned = True
            self._cond.notify_all()
        # A job in flight may wait on a request timeout; the thread is a daemon and stops after it.
        self._thread.join(timeout=2.0 if left else 60.0)
        return left

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if self._abandoned or not self._queue:
                    return
                job = self._queue[0]
            done = self._run(job)
            with self._cond:
                if not done:
                    return
                if self._queue and self._queue[0] is job:
                    self._queue.popleft()
                self._cond.notify_all()

    def _run(self, job: _Job) -> bool:
        """Do `job`, retrying as the class docstring says; False when the writer was stopped first."""
        outages = refusals = 0
        while True:
            try:
                job.fn()
            except Exception as err:  # noqa: BLE001 - tracking never raises into the sweep
                if store.is_unreachable(err):
                    self._note_outage(err)
                    delay = min(self._max_backoff_s, 0.5 * 2 ** min(outages, 8))
                    outages += 1
                else:
                    refusals += 1
                    if refusals >= _REFUSED_ATTEMPTS:
                        self._on_error()
                        logger.error("raysweep tracking: %s of trial %s failed: %s", job.what, job.trial_id, err,
                                     exc_info=err)
                        return True
                    delay = 0.2 * refusals
                with self._cond:
                    if self._abandoned:
                        return False
                    self._cond.wait(delay)
                    if self._abandoned:
                        return False
                continue
            self._note_back()
            return True

    def _note_outage(self, err: BaseException) -> None:
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            reason = str(err).splitlines()[0][:160] if str(err) else type(err).__name__
            print(f"raysweep: tracking at {self.uri} unreachable ({reason}); trials keep running, "
                  f"{self.pending} updates queued and retried", file=sys.stderr, flush=True)

    def _note_back(self) -> None:
        if self._outage_since is not None:
            print(f"raysweep: tracking at {self.uri} answers again after "
                  f"{time.monotonic() - self._outage_since:.0f} s; sending {self.pending} queued updates",
                  file=sys.stderr, flush=True)
            self._outage_since = None


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
            store is unreachable before it lists them in ``<storage_path>/tracking_pending.json``
            for ``raysweep sync`` (``tracking.drain_timeout_s``).

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
    ) -> None:
        self.tracking_uri = tracking_uri
        self.drain_timeout_s = float(drain_timeout_s)
        self._writer: TrackingWriter | None = None
        self.pending_file: str | None = None  # set when the end of the sweep could not send everything
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
        self._stopped: set[str] = set()  # child run ids whose trial Tune decided to stop
        self._withheld_tagged: dict[str, bool] = {}  # child run id -> its withheld tag lists a metric
        self._params_tried: set[str] = set()  # child run ids whose params were logged once
        self._params_full: set[str] = set()  # ... and those logged from the trial's config.yaml
        self.errors = 0  # tracking writes that failed (logged, never raised into the sweep)
        self.unsent = 0  # updates still queued when the sweep ended (listed in the pending file)

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
            self._writer = TrackingWriter(self.tracking_uri, self._count_error)
        return self._writer

    def _count_error(self) -> None:
        self.errors += 1

    def _submit(self, what: str, trial: Any, fn: Callable[[TrialView], Any]) -> None:
        """Queue `fn` on a snapshot of `trial` for the writer; a failure here is logged, never raised."""
        try:
            view = self.view(trial)
        except Exception:  # noqa: BLE001 - a tracking failure must not kill the sweep's trials
            self.errors += 1
            logger.exception("raysweep tracking: %s of trial %s not queued", what, getattr(trial, "trial_id", trial))
            return
        self._writer_thread().submit(what, view.trial_id, lambda: fn(view))

    def view(self, trial: Any) -> TrialView:
        """The :class:`TrialView` of a Tune trial now."""
        if isinstance(trial, TrialView):
            return trial

        def attribute(name: str) -> Any:
            try:
                return getattr(trial, name)
            except Exception:  # noqa: BLE001 - Tune raises when a trial has no storage yet
                return None

        return TrialView(
            trial_id=str(trial.trial_id), name=str(trial), config=dict(attribute("config") or {}),
            local_path=attribute("local_path"), path=attribute("path"),
            last_result=dict(attribute("last_result") or {}), checkpoint=attribute("checkpoint"),
            num_failures=attribute("num_failures"),
        )

    def _ensure_parent(self) -> str:
        if self.parent_run_id is not None and self.experiment_id is not None:
            return self.parent_run_id
        self.experiment_id = store.get_or_create_experiment(self.client, self.experiment)
        parent = store.find_parent_run(self.client, self.experiment_id, self.sweep_name, self.storage_path)
        if parent is None:
            parent = self.client.create_run(
                self.experiment_id, run_name=self.sweep_name,
                tags={ROLE_TAG: ROLE_SWEEP, SWEEP_TAG: self.sweep_name, STORAGE_TAG: self.storage_path,
                      STATUS_TAG: "running"},
            )
            if self.sweep_config is not None:
                self.client.log_dict(parent.info.run_id, self.sweep_config, "sweep.yaml")
        else:
            self.client.update_run(parent.info.run_id, status="RUNNING")
            self.client.set_tag(parent.info.run_id, STATUS_TAG, "running")
            if self.sweep_config is not None:  # `raysweep extend` grew the sweep: the parent shows it as it is now
                self.client.log_dict(parent.info.run_id, self.sweep_config, "sweep.yaml")
        self.parent_run_id = parent.info.run_id
        return self.parent_run_id

    # ------------------------------------------------------------------ child runs
    def run_id_for(self, trial: Any) -> str:
        """The child run of `trial`: cached, else found by its trial-id tag, else created."""
        trial_id = trial.trial_id
        if trial_id in self._runs:
            return self._runs[trial_id]
        parent = self._ensure_parent()
        existing = store.find_child_run(self.client, self.experiment_id, parent, trial_id)
        if existing is not None:
            run_id = existing.info.run_id
            last = existing.data.metrics.get("step")  # the latest value = the highest step logged
            if last is not None:
                self._last_step[run_id] = max(self._last_step.get(run_id, -math.inf), last)
        else:
            tags = {
                PARENT_TAG: parent, ROLE_TAG: ROLE_TRIAL, TRIAL_ID_TAG: trial_id, SWEEP_TAG: self.sweep_name,
                STATUS_TAG: "running",
            }
            run = self.client.create_run(self.experiment_id, run_name=str(trial), tags=tags)
            run_id = run.info.run_id
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
        from mlflow.entities import Param

        from_file = read_yaml_params(find_files(folders, ("config.yaml",)).get("config.yaml"))
        params = {**self._params(trial), **from_file}
        run = self.client.get_run(run_id)
        missing = [Param(k, param_text(v)) for k, v in params.items() if k not in run.data.params]
        for start in range(0, len(missing), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=missing[start : start + _BATCH_PARAMS])
        for tag, key in CONFIG_TAGS:
            if not run.data.tags.get(tag) and params.get(key) is not None:
                self.client.set_tag(run_id, tag, str(params[key]))
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
        self._submit("start", trial, self._open)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial restored from a checkpoint continues its child run."""
        self._submit("restore", trial, self._open)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log every numeric metric of one validation at ``step=`` its training step (one
        ``log_batch`` call); steps already logged for the run are skipped (module docstring)."""
        snapshot, queued_ms = dict(result), int(time.time() * 1000)
        self._submit("result", trial, lambda view: self.log_result(view, snapshot, queued_ms))

    def log_result(self, trial: Any, result: Mapping[str, Any], timestamp_ms: int | None = None) -> bool:
        """Log one result (with `timestamp_ms`, when it was reported; default now); returns False
        when its step was logged before and it was skipped."""
        from mlflow.entities import Metric

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
        values = numeric_metrics(result)
        values["step"] = float(step)
        metrics = [Metric(key, value, now, step) for key, value in values.items()]
        for start in range(0, len(metrics), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=metrics[start : start + _BATCH_METRICS])
        withheld = result.get(WITHHELD)
        if isinstance(withheld, Mapping) or self._withheld_tagged.get(run_id):
            # Metrics left out as unsound are absent from the metrics; the reason goes in a tag
            # that always describes the latest validation.
            reasons = dict(withheld) if isinstance(withheld, Mapping) else {}
            self.client.set_tag(run_id, WITHHELD_TAG, json.dumps(reasons, sort_keys=True))
            self._withheld_tagged[run_id] = bool(reasons)
        self._last_step[run_id] = step
        return True

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """The trial failed and Tune will retry it: tag ``retrying`` and the failure count."""
        self._submit("recover", trial, self._recover)

    def _recover(self, trial: TrialView) -> None:
        run_id = self.run_id_for(trial)
        self.client.set_tag(run_id, STATUS_TAG, "retrying")
        self.client.set_tag(run_id, "raysweep.failures", str(trial.num_failures if trial.num_failures is not None else ""))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Finished, diverged or stopped early: status tag, artifacts, run terminated."""
        self._submit("complete", trial, lambda view: self._close(view, error=False))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Failed for good (retries exhausted): status ``error``, artifacts and Tune's error.txt."""
        self._submit("error", trial, lambda view: self._close(view, error=True))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close the parent run with a count of trials per status, after every queued update; if
        the store stays unreachable for ``drain_timeout_s``, list what is unsent (module docstring)."""
        writer = self._writer_thread()
        writer.submit("experiment end", "sweep", self._close_parent)
        left = writer.drain(self.drain_timeout_s)
        self._writer = None
        if left:
            self.unsent = len(left)
            self._record_unsent(left)

    def _close_parent(self) -> None:
        if self.parent_run_id is None:
            return
        children = store.search_all(
            self.client, [self.experiment_id], f"tags.`{PARENT_TAG}` = {store.quote(self.parent_run_id)}"
        )
        counts: dict[str, int] = {}
        for run in children:
            status = run.data.tags.get(STATUS_TAG, "unknown")
            counts[status] = counts.get(status, 0) + 1
        # Counts of an earlier run of this sweep (before a resume) that no longer apply go.
        for key in self.client.get_run(self.parent_run_id).data.tags:
            if key.startswith("raysweep.trials.") and key.removeprefix("raysweep.trials.") not in counts:
                self.client.delete_tag(self.parent_run_id, key)
        for status, count in counts.items():
            self.client.set_tag(self.parent_run_id, f"raysweep.trials.{status}", str(count))
        self.client.set_tag(self.parent_run_id, "raysweep.trials", str(len(children)))
        self.client.set_tag(self.parent_run_id, "raysweep.tracking_errors", str(self.errors))
        self.client.set_tag(self.parent_run_id, STATUS_TAG, "finished")
        self._terminate(self.parent_run_id, "FINISHED")

    def _record_unsent(self, left: list[_Job]) -> None:
        """Write the pending file (what could not be sent, by trial) and say so in one line."""
        by_trial: dict[str, list[str]] = {}
        for job in left:
            by_trial.setdefault(job.trial_id, []).append(job.what)
        path = f"{self.storage_path.rstrip('/')}/{PENDING_FILE}"
        record = {"tracking_uri": self.tracking_uri, "experiment": self.experiment, "sweep": self.sweep_name,
                  "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "unsent": by_trial}
        sweep_dir = self.storage_path if is_uri(self.storage_path) else str(local_path(self.storage_path))
        try:
            write_text(path, json.dumps(record, indent=1) + "\n")
            self.pending_file = path
            where = f"listed in {path}"
        except OSError as err:
            where = f"could not list them in {path}: {err}"
        print(f"raysweep: tracking at {self.tracking_uri} still unreachable after {self.drain_timeout_s:g} s: "
              f"{len(left)} updates of {len(by_trial)} trials not sent ({where}); the trials' files hold them: "
              f"run `raysweep sync {sweep_dir}` once it answers", file=sys.stderr, flush=True)

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
                params = {**self._params(trial), **read_yaml_params(found.get("config.yaml"))}
                status = trial_status(
                    read_json(found.get("final.json")), getattr(trial, "last_result", None) or {}, params,
                    run_id in self._stopped,
                )
        self.client.set_tag(run_id, STATUS_TAG, status)
        self._terminate(run_id, MLFLOW_STATUS[status])

    def _terminate(self, run_id: str, status: str) -> None:
        # With a tracking server MlflowClient.set_terminated prints two "View run" lines per run
        # to stdout; a sweep of hundreds of trials keeps its terminal for Tune's progress table.
        with redirect_stdout(io.StringIO()):
            self.client.set_terminated(run_id, status)


def mlflow_callback(
    storage_dir: str | Path,
    sweep_name: str,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    params_fn: ParamsFn | None = None,
    sweep_config: Mapping[str, Any] | None = None,
    output_dirs_fn: OutputDirsFn | None = None,
    drain_timeout_s: float = DRAIN_TIMEOUT_S,
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
    """
    uri = store.tracking_uri_for(storage_dir, tracking_uri)
    return MlflowTrackingCallback(
        uri, experiment or sweep_name, sweep_name, parent_run_key(storage_dir, sweep_name), params_fn=params_fn,
        sweep_config=sweep_config, output_dirs_fn=output_dirs_fn, drain_timeout_s=drain_timeout_s,
    )
