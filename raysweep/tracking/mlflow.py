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

Statuses (tag ``raysweep.status``): ``running``, ``retrying`` (failed, Tune will retry it),
``finished``, ``diverged`` (the loss became non-finite: from the trial's ``final.json``),
``early_stopped`` (stopped by the scheduler, e.g. ASHA, or a stopper) and ``error``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Any

from ray import tune

from raysweep.names import WITHHELD
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
    DATASET_TAG,
    LOSS_TAG,
    MODEL_TAG,
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
from raysweep.tune.storage import parent_run_key

__all__ = ["ARTIFACT_FILES", "MlflowTrackingCallback", "flatten_params", "mlflow_callback"]

logger = logging.getLogger(__name__)

_BATCH_METRICS, _BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits
_CONFIG_TAGS = ((DATASET_TAG, "data.dataset"), (LOSS_TAG, "loss.neural"), (MODEL_TAG, "model.arch"))

ParamsFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
OutputDirsFn = Callable[[Any], Sequence[str | Path]]


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
    ) -> None:
        self.tracking_uri = tracking_uri
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

    # ------------------------------------------------------------------ pickling and state
    # No get_state/set_state: MLflow itself is the state. A restored driver finds the parent and
    # child runs by their tags and the last logged step from the run's own "step" metric; a copy
    # saved with Tune's experiment state could lag behind what was logged after it and let a
    # re-reported step in twice.
    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles the run config (callbacks included) for Tuner.restore; a client is not
        # picklable, and cached ids are dropped so the restored copy looks them up afresh.
        state = dict(self.__dict__)
        state.update(_client=None, experiment_id=None, parent_run_id=None, _runs={}, _last_step={},
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
        tracking URI stops the sweep at once with a one-line error)."""
        self._ensure_parent()

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
        self.parent_run_id = parent.info.run_id
        return self.parent_run_id

    # ------------------------------------------------------------------ child runs
    @contextmanager
    def _guard(self, what: str, trial: Any) -> Iterator[None]:
        # A tracking failure must not kill hundreds of GPU trials: MLflow's HTTP client already
        # retries with back-off; what still fails is logged loudly and counted on the parent run.
        try:
            yield
        except Exception:  # noqa: BLE001
            self.errors += 1
            logger.exception("raysweep tracking: %s of trial %s failed", what, getattr(trial, "trial_id", trial))

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
        for tag, key in _CONFIG_TAGS:
            if not run.data.tags.get(tag) and params.get(key) is not None:
                self.client.set_tag(run_id, tag, str(params[key]))
        self._params_tried.add(run_id)
        if from_file:
            self._params_full.add(run_id)

    def _extra_dirs(self, trial: Any) -> list[str | Path]:
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
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Create (or continue) the trial's child run and tag it running."""
        with self._guard("start", trial):
            self._open(trial)

    def on_trial_restore(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial restored from a checkpoint continues its child run."""
        with self._guard("restore", trial):
            self._open(trial)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        """Log every numeric metric of one validation at ``step=`` its training step (one
        ``log_batch`` call); steps already logged for the run are skipped (module docstring)."""
        with self._guard("result", trial):
            self.log_result(trial, result)

    def log_result(self, trial: Any, result: Mapping[str, Any]) -> bool:
        """Log one result; returns False when its step was logged before and it was skipped."""
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
        now = int(time.time() * 1000)
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
        with self._guard("recover", trial):
            run_id = self.run_id_for(trial)
            self.client.set_tag(run_id, STATUS_TAG, "retrying")
            self.client.set_tag(run_id, "raysweep.failures", str(getattr(trial, "num_failures", "")))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Finished, diverged or stopped early: status tag, artifacts, run terminated."""
        with self._guard("complete", trial):
            self._close(trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Failed for good (retries exhausted): status ``error``, artifacts and Tune's error.txt."""
        with self._guard("error", trial):
            self._close(trial, error=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """Close the parent run with a count of trials per status."""
        with self._guard("experiment end", "sweep"):
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
                    read_json(found.get("final.json")), trial.last_result or {}, params, run_id in self._stopped
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
) -> MlflowTrackingCallback:
    """The callback the sweep runner adds to ``RunConfig(callbacks=...)``.

    Args:
        storage_dir: the sweep's ``--storage`` folder; the default store is ``<storage_dir>/mlflow.db``.
        sweep_name: the sweep's (Tune experiment's) name; the experiment folder is
            ``<storage_dir>/<sweep_name>``, the parent run's key
            (:func:`raysweep.tune.storage.parent_run_key`).
        tracking_uri: ``tracking.uri`` of the sweep file (None: the default store).
        experiment: ``tracking.experiment`` (None: the sweep's name).
        params_fn: see :class:`MlflowTrackingCallback`.
        sweep_config: see :class:`MlflowTrackingCallback`.
        output_dirs_fn: see :class:`MlflowTrackingCallback`.
    """
    uri = store.tracking_uri_for(storage_dir, tracking_uri)
    return MlflowTrackingCallback(
        uri, experiment or sweep_name, sweep_name, parent_run_key(storage_dir, sweep_name), params_fn=params_fn, sweep_config=sweep_config,
        output_dirs_fn=output_dirs_fn,
    )
