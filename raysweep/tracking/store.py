"""Where a sweep's MLflow data lives, and the lookups every writer and reader of it shares.

A sweep is tracked as one MLflow *experiment* holding one *parent run* per sweep (tag
``raysweep.role=sweep``) and one *child run* per Tune trial (tag ``raysweep.role=trial``, MLflow's
``mlflow.parentRunId`` pointing at the parent, ``raysweep.trial_id`` the Tune trial id). The tags
are the keys by which a resumed sweep finds its parent again and a retried trial finds its child
run again, so neither is ever duplicated.

The default store is an embedded SQLite database beside the sweep's results,
``sqlite:///<storage>/mlflow.db`` (MLflow's file store is deprecated), with artifacts under
``<storage>/mlartifacts/``. An ``http://`` tracking server works the same way.

A SQLite store on a network filesystem (NFS, Lustre, GPFS, BeeGFS, CIFS/SMB, FUSE mounts) is
refused before a sweep starts (:func:`check_sqlite_on_local_disk`): SQLite's locking relies on
POSIX locks that these filesystems implement partly or not at all, and SQLite's own documentation
warns that the database can be corrupted there. On a cluster that is the default store's usual
place (``--storage`` on the shared filesystem), so the fix is named in the refusal: a path on the
head's local disk, or an ``http://`` MLflow server (the cluster templates start one on the head).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from raysweep.errors import RaysweepError
from raysweep.storage import is_uri, local_path

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

# Tag keys. MLflow's own parent tag is what its UI nests child runs under.
PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"
ROLE_TAG = "raysweep.role"
SWEEP_TAG = "raysweep.sweep"
STORAGE_TAG = "raysweep.storage"
TRIAL_ID_TAG = "raysweep.trial_id"
STATUS_TAG = "raysweep.status"
DATASET_TAG = "raysweep.dataset"
LOSS_TAG = "raysweep.loss"
MODEL_TAG = "raysweep.model"
# JSON {metric: reason} of the metrics the latest validation withheld as unsound (e.g. an
# aggregated anisotropy from too few posterior means); "{}" when none.
WITHHELD_TAG = "raysweep.withheld"
FAILURES_TAG = "raysweep.failures"  # on a child: how often Tune retried the trial
# On the parent: the count of its children, one count per status (raysweep.trials.<status>), and
# the count of updates the store refused.
TRIALS_TAG = "raysweep.trials"
TRACKING_ERRORS_TAG = "raysweep.tracking_errors"
ROLE_SWEEP = "sweep"
ROLE_TRIAL = "trial"


def trials_status_tag(status: str) -> str:
    """The parent's tag counting its children of `status` (``""``: the prefix of every such tag)."""
    return f"{TRIALS_TAG}.{status}"

#: Tags of a child run set from its params: (tag, dotted trial key).
CONFIG_TAGS = ((DATASET_TAG, "data.dataset"), (LOSS_TAG, "loss.neural"), (MODEL_TAG, "model.arch"))

#: MLflow 3's UI opens an experiment in its GenAI view unless told it holds model training runs.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
_DB_SCHEMES = ("sqlite:", "postgresql", "mysql", "mssql")
_SERVER_SCHEMES = ("http://", "https://", "databricks")
_BAD_METRIC_CHARS = re.compile(r"[^/\w.\- :]")


def tracking_uri_for(storage_dir: str | Path | None, uri_or_none: str | None) -> str:
    """The MLflow tracking URI of a sweep.

    Args:
        storage_dir: the sweep's storage folder (``--storage``); the default store is the SQLite
            database ``<storage_dir>/mlflow.db``.
        uri_or_none: ``tracking.uri`` of the sweep file: an ``http(s)://`` tracking server, a
            ``sqlite:///`` path or another SQLAlchemy database URL. ``None`` means the default.

    Raises:
        RaysweepError: for a URI MLflow cannot use, or a storage folder that is not local (SQLite
            needs a local file: give an ``http://`` server for S3/GCS storage).
    """
    if uri_or_none:
        uri = uri_or_none.strip()
        if uri.startswith(_SERVER_SCHEMES) or uri.startswith(_DB_SCHEMES):
            return uri
        if uri.startswith("file:") or uri.startswith(("/", "./", "~")):
            # Refused rather than made idempotent: MLflow's file store appends a metric row even when
            # the same (key, value, timestamp, step) is logged again, so a replayed batch counts twice
            # there (once on SQLite), and MLflow 3 deprecated that store.
            raise RaysweepError(
                f"tracking.uri {uri!r}: MLflow's file store is not supported (deprecated in MLflow 3, and it logs a "
                "replayed metric twice): use sqlite:///path/mlflow.db or an http(s):// tracking server"
            )
        raise RaysweepError(
            f"tracking.uri {uri!r}: expected an http(s)://host:port tracking server or a sqlite:///path/mlflow.db "
            "store (or leave it out for <storage>/mlflow.db)"
        )
    if storage_dir is None:
        raise RaysweepError("tracking: give tracking.uri or a storage folder (--storage) to hold mlflow.db")
    if is_uri(storage_dir):
        raise RaysweepError(
            f"tracking.uri: the storage {storage_dir} is not a local folder, so it cannot hold the SQLite store: "
            "set tracking.uri to an http:// MLflow tracking server"
        )
    local = local_path(storage_dir)
    local.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local / DB_FILE}"


#: Filesystem types (``/proc/self/mounts``' third field) on which SQLite's locks are unsafe; any
#: ``fuse.*`` type (sshfs, s3fs, gcsfuse, ...) too.
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "9p", "afs", "fuse",
})
MOUNTS_FILE = "/proc/self/mounts"


def _unescape_mount(field: str) -> str:
    """A mount table field with its octal escapes (``\\040`` for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_of(path: str | Path, mounts: str) -> tuple[str, str] | None:
    """(mount point, filesystem type) holding `path`, by the longest mount point that is a prefix
    of its resolved path, from the text of a mount table (``/proc/self/mounts`` format); None when
    no line matches (an empty table)."""
    target = os.path.realpath(path)
    best: tuple[str, str] | None = None
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = _unescape_mount(fields[1]), fields[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)  # a later line with the same mount point is mounted over it
    return best


def is_network_filesystem(fstype: str) -> bool:
    """Whether SQLite must not be used on a filesystem of type `fstype` (:data:`NETWORK_FILESYSTEMS`,
    ``fuse.*``; ``fuseblk``, a FUSE driver of a local disk, is local)."""
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


def check_sqlite_on_local_disk(uri: str, mounts: str | None = None) -> None:
    """Refuse a ``sqlite:///`` tracking store whose database lies on a network filesystem (module
    docstring), in one line naming the path, its filesystem and the fix. Any other store passes.

    Args:
        uri: the tracking URI the sweep will write to (:func:`tracking_uri_for`).
        mounts: a mount table's text (tests); default: this machine's :data:`MOUNTS_FILE`, or no
            check where it cannot be read (not Linux).
    """
    db = sqlite_path(uri)
    if db is None:
        return
    if mounts is None:
        try:
            mounts = Path(MOUNTS_FILE).read_text()
        except OSError:
            return
    found = filesystem_of(db, mounts)
    if found is None or not is_network_filesystem(found[1]):
        return
    point, fstype = found
    raise RaysweepError(
        f"tracking.uri: the SQLite store {db} is on a {fstype} network filesystem (mounted at {point}), where SQLite's "
        "locks are unsafe and the database can be corrupted: set tracking.uri to sqlite:////<a path on this "
        "machine's local disk>/mlflow.db or to an http:// MLflow tracking server (see cluster/README.md)"
    )


def resolve_tracking_uri(tracking_uri: str | None, storage: str | Path | None) -> str:
    """The tracking store a reading command (``ui``, ``report``) opens: `tracking_uri`, else ``<storage>/mlflow.db``, else
    ``$MLFLOW_TRACKING_URI``; a one-line error when none is given or the SQLite file is missing."""
    if tracking_uri:
        uri = tracking_uri_for(None, tracking_uri)
    elif storage is not None:
        if not (Path(storage) / DB_FILE).is_file():
            raise RaysweepError(
                f"--storage {storage}: no mlflow.db there; run a sweep with this --storage first, or pass --tracking-uri"
            )
        uri = tracking_uri_for(storage, None)
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        uri = tracking_uri_for(None, os.environ["MLFLOW_TRACKING_URI"])
    else:
        raise RaysweepError("give --storage DIR (the sweep's storage folder) or --tracking-uri URI")
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise RaysweepError(f"--tracking-uri {uri}: no such SQLite file {db}")
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (``None`` for any other store)."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri.removeprefix("sqlite:///").split("?", 1)[0])


def default_artifact_root(uri: str) -> str | None:
    """Artifact root for experiments raysweep creates in `uri`: ``<db folder>/mlartifacts`` for
    SQLite (without it MLflow would write to ``./mlruns`` of whatever folder the driver runs in);
    ``None`` (the server's choice) otherwise."""
    db = sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACTS_DIR).as_uri()


def make_client(uri: str) -> MlflowClient:
    """An explicit :class:`MlflowClient` for `uri` (no global fluent state is touched).

    With a tracking server, MLflow prints two "View run" lines to stdout per run it ends; they are
    turned off here (``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``, unless set) rather than by
    redirecting stdout around the call, which from the tracking writer's thread would swallow
    whatever the driver's main thread printed meanwhile (trial lines were lost that way)."""
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


def _slug(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "experiment"


def get_or_create_experiment(client: MlflowClient, name: str, attempts: int = 8) -> str:
    """The id of experiment `name`, creating it when missing.

    Several drivers may create the same experiment at once (MLflow raises
    ``RESOURCE_ALREADY_EXISTS`` for all but one), and a fresh SQLite file may be initialised by
    two processes at once: both are retried with a short back-off, re-reading the experiment.
    """
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    uri = client.tracking_uri
    last: Exception | None = None
    for attempt in range(attempts):
        try:
            experiment = client.get_experiment_by_name(name)
            if experiment is not None:
                if experiment.lifecycle_stage == "deleted":
                    raise RaysweepError(
                        f"tracking.experiment {name!r} is deleted in {uri}: restore it "
                        "(mlflow experiments restore) or choose another tracking.experiment"
                    )
                return experiment.experiment_id
            root = default_artifact_root(uri)
            location = f"{root}/{_slug(name)}" if root else None
            return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)
        except (MlflowException, OperationalError) as err:
            if is_unreachable(err) and not isinstance(err, OperationalError):
                raise RaysweepError(unreachable_message(uri, err)) from None
            last = err
            logger.debug("experiment %r: attempt %d failed (%s); retrying", name, attempt + 1, err)
            time.sleep(0.05 * 2**attempt)
    raise RaysweepError(f"tracking.experiment {name!r}: could not open or create it in {uri}: {last}")


#: MLflow's HTTP client retries a failed request 7 times with a back-off of about 4 minutes in all
#: (``MLFLOW_HTTP_REQUEST_*``), which is right for one script but not for a sweep driver: raysweep's
#: tracking writer retries by itself, for as long as the server is down, and a dead URI given at
#: the start must fail in seconds. These are the driver's defaults; a value in the environment wins.
HTTP_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def use_driver_http_defaults() -> None:
    """Apply :data:`HTTP_CLIENT_DEFAULTS` to this process (variables already set are kept)."""
    for key, value in HTTP_CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)


#: HTTP statuses that mean a gateway in front of the store could not reach it (an outage), as
#: opposed to any other status, which the store itself answered (a refusal, retried a bounded number
#: of times).
OUTAGE_STATUSES = frozenset({502, 503, 504})
# How MLflow's client reports a status: after its own retries ("too many 500 error responses",
# urllib3's words), or at once ("failed with error code 500 != 200").
_STATUS_TEXT = re.compile(r"too many (\d{3}) error responses|failed with error code (\d{3})")


def http_status(err: BaseException) -> int | None:
    """The HTTP status a tracking server (or a gateway before it) answered with, found anywhere in
    `err`'s chain; ``None`` when no HTTP answer came (refused, reset, timed out) or the store is not HTTP."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        if isinstance(getattr(response, "status_code", None), int):
            return int(response.status_code)
        match = _STATUS_TEXT.search(str(current))
        if match:
            return int(match.group(1) or match.group(2))
        current = current.__cause__ or current.__context__
    return None


def is_unreachable(err: BaseException) -> bool:
    """Whether `err` is an outage of the tracking store (connection refused or reset, a timeout, a
    gateway's 502/503/504, a locked SQLite file), worth retrying for as long as it lasts, as opposed
    to an answer of the store itself (any other 4xx/5xx: a persistent 500 included), which the
    writer tries a bounded number of times (:mod:`raysweep.tracking.writer`)."""
    import requests
    from sqlalchemy.exc import OperationalError

    status = http_status(err)
    if status is not None:
        return status in OUTAGE_STATUSES
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, requests.exceptions.ConnectionError | requests.exceptions.Timeout
                      | ConnectionError | TimeoutError):
            return True
        if isinstance(current, OperationalError) and "locked" in str(current):
            return True
        text = str(current)
        if "failed with exception" in text and ("Max retries exceeded" in text or "Connection" in text):
            return True  # no status in it (checked above): refused, reset or timed out
        current = current.__cause__ or current.__context__
    return False


def error_reason(err: BaseException, limit: int = 300) -> str:
    """`err` in one line of at most `limit` characters (the journal's reason for an unsent job)."""
    text = " ".join(str(err).split()) or type(err).__name__
    status = http_status(err)
    head = f"{type(err).__name__}" + (f" (HTTP {status})" if status is not None else "")
    line = f"{head}: {text}"
    return line if len(line) <= limit else line[: limit - 3] + "..."


def unreachable_message(uri: str, err: BaseException) -> str:
    """One line for a tracking store that does not answer at all."""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    if len(reason) > 160:
        reason = reason[:157] + "..."
    return (f"tracking.uri {uri}: no MLflow tracking server answers there ({reason}): start it (mlflow server "
            "--host ... --port ...) or fix tracking.uri")


def find_experiment(client: MlflowClient, name: str) -> str:
    """The id of an existing, active experiment; a one-line error naming ``--experiment`` otherwise."""
    try:
        experiment = client.get_experiment_by_name(name)
    except Exception as err:  # noqa: BLE001 - any store failure becomes one line
        raise RaysweepError(f"--experiment {name!r}: cannot read the tracking store {client.tracking_uri}: {err}") from None
    if experiment is None or experiment.lifecycle_stage == "deleted":
        raise RaysweepError(
            f"--experiment {name!r}: no such experiment in {client.tracking_uri}; "
            "check the name (see `raysweep ui`) and --tracking-uri"
        )
    return experiment.experiment_id


def quote(value: str) -> str:
    """A string literal for MLflow's search filter grammar."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def search_all(client: MlflowClient, experiment_ids: list[str], filter_string: str = "") -> list[Run]:
    """Every active run matching `filter_string`, following MLflow's result pages."""
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_parent_run(client: MlflowClient, experiment_id: str, sweep: str, storage: str) -> Run | None:
    """The parent run of the sweep named `sweep` stored at `storage`, if it was opened before."""
    runs = search_all(
        client, [experiment_id],
        f"tags.`{ROLE_TAG}` = '{ROLE_SWEEP}' and tags.`{SWEEP_TAG}` = {quote(sweep)} "
        f"and tags.`{STORAGE_TAG}` = {quote(storage)}",
    )
    return min(runs, key=lambda r: r.info.start_time) if runs else None


def find_child_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str) -> Run | None:
    """The child run of trial `trial_id` under `parent_run_id`, if it exists (the oldest one if a
    store was ever written without raysweep's guard)."""
    runs = search_all(
        client, [experiment_id],
        f"tags.`{PARENT_TAG}` = {quote(parent_run_id)} and tags.`{TRIAL_ID_TAG}` = {quote(trial_id)}",
    )
    if len(runs) > 1:
        logger.warning("trial %s has %d child runs; continuing the oldest", trial_id, len(runs))
    return min(runs, key=lambda r: r.info.start_time) if runs else None


def metric_name(key: str) -> str:
    """`key` as a valid MLflow metric name: characters MLflow refuses become ``_``, and the name
    is normalised as a path (``a//b`` -> ``a/b``) since MLflow may store metrics as files.
    ``sse/grad_share`` stays as it is: ``/`` is allowed and groups the metric in the UI."""
    name = _BAD_METRIC_CHARS.sub("_", key)
    name = "/".join(part for part in name.split("/") if part not in ("", ".", ".."))
    return name or "_"


def ui_run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run, e.g. ``http://127.0.0.1:5000/#/experiments/1/runs/abc``."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"

