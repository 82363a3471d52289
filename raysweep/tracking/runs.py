"""The one writer of a sweep's MLflow runs, shared by the live callback
(:mod:`raysweep.tracking.mlflow`) and the replay of a sweep directory (:mod:`raysweep.tracking.sync`).

Both must write the same runs the same way: a parent found again by its tags and a child found
again by its trial id (:mod:`raysweep.tracking.store`), so neither is ever duplicated; params
written only when the run lacks them (MLflow params are immutable); metrics in ``log_batch``
calls at ``step=`` the training step; the withheld tag describing the latest validation; a trial
ended with its status tag and the matching MLflow status; the parent closed with its per-status
counts. Keeping these writes in one module keeps the two paths from drifting apart; each caller
keeps its own bookkeeping (the callback's caches and writer thread, sync's report).

Every function takes the :class:`MlflowClient` to write with: the callback creates its client
lazily and drops it when pickled, so the writer holds no state of its own.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep.names import RECONSTRUCTIONS_KEY
from raysweep.storage import SWEEP_FILE
from raysweep.tracking import store
from raysweep.tracking.results import MLFLOW_STATUS, numeric_metrics, param_text
from raysweep.tracking.store import (
    CONFIG_TAGS,
    FAILURES_TAG,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    ROLE_TRIAL,
    STATUS_TAG,
    STORAGE_TAG,
    SWEEP_TAG,
    TRACKING_ERRORS_TAG,
    TRIAL_ID_TAG,
    TRIALS_TAG,
    WITHHELD_TAG,
    trials_status_tag,
)

if TYPE_CHECKING:
    from mlflow.entities import Metric, Run
    from mlflow.tracking import MlflowClient

BATCH_METRICS, BATCH_PARAMS = 1000, 100  # MLflow's log_batch limits


# ------------------------------------------------------------------------------ the parent run
def log_sweep(client: MlflowClient, parent_id: str, sweep_config: Mapping[str, Any]) -> None:
    """The resolved sweep as the parent's :data:`~raysweep.storage.SWEEP_FILE` artifact (what the
    frontier reads back): logged when the parent is created, and again when the sweep grew."""
    client.log_dict(parent_id, dict(sweep_config), SWEEP_FILE)


def find_or_create_parent(
    client: MlflowClient, experiment_id: str, sweep_name: str, key: str, sweep_config: Mapping[str, Any] | None,
) -> tuple[Run, bool]:
    """The sweep's parent run, found by its name and key (:func:`raysweep.storage.parent_run_key`),
    else created ``running`` with the sweep logged on it; and whether it was created."""
    parent = store.find_parent_run(client, experiment_id, sweep_name, key)
    if parent is not None:
        return parent, False
    parent = client.create_run(
        experiment_id, run_name=sweep_name,
        tags={ROLE_TAG: ROLE_SWEEP, SWEEP_TAG: sweep_name, STORAGE_TAG: key, STATUS_TAG: "running"},
    )
    if sweep_config is not None:
        log_sweep(client, parent.info.run_id, sweep_config)
    return parent, True


def reopen_parent(client: MlflowClient, parent_id: str, sweep_config: Mapping[str, Any] | None) -> None:
    """A resumed sweep's parent is running again, and shows the sweep as it is now (``raysweep
    extend`` may have grown it)."""
    client.update_run(parent_id, status="RUNNING")
    client.set_tag(parent_id, STATUS_TAG, "running")
    if sweep_config is not None:
        log_sweep(client, parent_id, sweep_config)


def close_parent(client: MlflowClient, experiment_id: str, parent_id: str, errors: int, *,
                 keep_errors: bool = False) -> tuple[int, int]:
    """Close the parent: a count of its children per status (counts of an earlier run of the sweep
    that no longer apply removed), their total, the count of refused updates (with `keep_errors`,
    only when the parent has none yet: sync does not know the callback's count), status
    ``finished`` and the run terminated. Only what differs from the stored run is written, so a
    second close changes nothing.

    Returns:
        (tags written or removed, 1 when the parent's status was written else 0).
    """
    children = store.search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = {store.quote(parent_id)}")
    counts: dict[str, int] = {}
    for run in children:
        status = run.data.tags.get(STATUS_TAG, "unknown")
        counts[status] = counts.get(status, 0) + 1
    parent = client.get_run(parent_id)
    tags = parent.data.tags
    written = 0
    for key in tags:
        if key.startswith(trials_status_tag("")) and key.removeprefix(trials_status_tag("")) not in counts:
            client.delete_tag(parent_id, key)
            written += 1
    wanted = {trials_status_tag(status): str(count) for status, count in counts.items()}
    wanted[TRIALS_TAG] = str(len(children))
    if not (keep_errors and TRACKING_ERRORS_TAG in tags):
        wanted[TRACKING_ERRORS_TAG] = str(errors)
    for key, value in wanted.items():
        if tags.get(key) != value:
            client.set_tag(parent_id, key, value)
            written += 1
    if tags.get(STATUS_TAG) == "finished" and parent.info.status == "FINISHED":
        return written, 0
    client.set_tag(parent_id, STATUS_TAG, "finished")
    terminate(client, parent_id, "FINISHED")
    return written, 1


# ------------------------------------------------------------------------------- child runs
def find_or_create_child(
    client: MlflowClient, experiment_id: str, parent_id: str, sweep_name: str, trial_id: str,
    run_name: Callable[[], str], existing: Mapping[str, Run] | None = None,
) -> tuple[Run, bool]:
    """The trial's child run, found by its trial id under the parent (in `existing`, the parent's
    children by trial id, when the caller listed them at once; else searched), else created
    ``running`` and named by `run_name`; and whether it was created."""
    if existing is not None:
        found = existing.get(trial_id)
    else:
        found = store.find_child_run(client, experiment_id, parent_id, trial_id)
    if found is not None:
        return found, False
    tags = {PARENT_TAG: parent_id, ROLE_TAG: ROLE_TRIAL, TRIAL_ID_TAG: trial_id, SWEEP_TAG: sweep_name,
            STATUS_TAG: "running"}
    return client.create_run(experiment_id, run_name=run_name(), tags=tags), True


def children_by_trial(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[str, Run]:
    """Every child run of the parent by its trial id (the oldest when a trial has two, as
    :func:`raysweep.tracking.store.find_child_run` picks)."""
    children = store.search_all(client, [experiment_id], f"tags.`{PARENT_TAG}` = {store.quote(parent_id)}")
    existing: dict[str, Run] = {}
    for run in sorted(children, key=lambda r: r.info.start_time):
        existing.setdefault(run.data.tags.get(TRIAL_ID_TAG, ""), run)
    return existing


def log_params(client: MlflowClient, run: Run, params: Mapping[str, Any]) -> tuple[int, int]:
    """The params `run` lacks (MLflow params are immutable: a key it has is kept), in batches,
    and the dataset, loss and model tags from them when the run has none.

    Returns:
        (params logged, tags set).
    """
    from mlflow.entities import Param

    run_id = run.info.run_id
    missing = [Param(k, param_text(v)) for k, v in params.items() if k not in run.data.params]
    for start in range(0, len(missing), BATCH_PARAMS):
        client.log_batch(run_id, params=missing[start : start + BATCH_PARAMS])
    tagged = 0
    for tag, key in CONFIG_TAGS:
        current = run.data.tags.get(tag)
        if not current and params.get(key) is not None and current != str(params[key]):
            client.set_tag(run_id, tag, str(params[key]))
            tagged += 1
    return len(missing), tagged


def result_metrics(result: Mapping[str, Any], step: int, timestamp_ms: int) -> list[Metric]:
    """One validation's metrics as MLflow metrics at ``step=`` its training step (the step itself
    logged as metric ``step``: how a continued run finds where its history stopped)."""
    from mlflow.entities import Metric

    values = numeric_metrics(result)
    values["step"] = float(step)
    return [Metric(key, value, timestamp_ms, step) for key, value in values.items()]


def log_metrics(client: MlflowClient, run_id: str, metrics: Iterable[Metric]) -> None:
    """Metrics in ``log_batch`` calls of at most MLflow's limit."""
    metrics = list(metrics)
    for start in range(0, len(metrics), BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_METRICS])


#: An image MLflow's ``log_image(key=, step=)`` wrote: ``images/<key>+step+<step>+timestamp+...`` (``%`` in
#: MLflow before 3) and its ``+compressed.webp`` thumbnail.
_IMAGE_FILE = re.compile(rf"^{re.escape(RECONSTRUCTIONS_KEY)}[+%]step[+%](\d+)[+%]timestamp[+%]\d+[+%][^+%]+\.png$")


def log_reconstructions(client: MlflowClient, run_id: str, path: Path, step: int,
                        timestamp_ms: int | None = None) -> None:
    """A validation's reconstruction grid as an MLflow image at ``step=`` its training step (key
    :data:`~raysweep.names.RECONSTRUCTIONS_KEY`): the run page shows it per step, the compare view across runs."""
    from PIL import Image

    with Image.open(path) as image:
        image.load()
        client.log_image(run_id, image, key=RECONSTRUCTIONS_KEY, step=int(step), timestamp=timestamp_ms,
                         synchronous=True)


def logged_reconstruction_steps(client: MlflowClient, run_id: str) -> set[int]:
    """The steps whose reconstruction grid the run holds as an MLflow image."""
    steps = set()
    for info in client.list_artifacts(run_id, "images"):
        found = _IMAGE_FILE.match(Path(info.path).name)
        if found:
            steps.add(int(found.group(1)))
    return steps


def withheld_text(withheld: Any) -> str:
    """The withheld tag's value: JSON {metric: reason} of the latest validation ("{}" when none)."""
    return json.dumps(dict(withheld) if isinstance(withheld, Mapping) else {}, sort_keys=True)


def set_withheld(client: MlflowClient, run_id: str, withheld: Any) -> None:
    """Tag the metrics the latest validation withheld as unsound (absent from its metrics)."""
    client.set_tag(run_id, WITHHELD_TAG, withheld_text(withheld))


def set_failures(client: MlflowClient, run_id: str, count: Any) -> None:
    """Tag how often Tune retried the trial."""
    client.set_tag(run_id, FAILURES_TAG, str(count if count is not None else ""))


def end_trial(client: MlflowClient, run_id: str, status: str, current: tuple[str, str] | None = None) -> bool:
    """Tag the trial's ending `status` (``finished``, ``diverged``, ``early_stopped``, ``error``)
    and terminate its run with the matching MLflow status. With `current` (the run's status tag
    and MLflow status as stored), only what differs is written; returns whether anything was."""
    mlflow_status = MLFLOW_STATUS[status]
    tag, state = current if current is not None else (None, None)
    if tag == status and state == mlflow_status:
        return False
    if tag != status:
        client.set_tag(run_id, STATUS_TAG, status)
    terminate(client, run_id, mlflow_status)
    return True


def terminate(client: MlflowClient, run_id: str, status: str) -> None:
    """End a run (without MLflow's "View run" lines: :func:`raysweep.tracking.store.make_client`
    turns them off, so a sweep of hundreds of trials keeps its console for its own lines)."""
    client.set_terminated(run_id, status)
