"""Where a sweep's files live: every path and URI rule of sweeps and trials, in one place.

A *storage* (``raysweep sweep --storage``) is where sweep directories go: a local folder
(``./runs`` by default) or object storage that every node of a cluster reaches, given as a URI
(``s3://bucket/sweeps``, ``gs://...``; any ``scheme://`` pyarrow opens). ``file:///abs/path`` is a
local folder written as a URI: it is local everywhere here (its prefix is dropped and the path
resolved), so ``file://`` and a plain path give the same sweep directory and the same MLflow keys.

- The *sweep directory* is ``<storage>/<name>`` (:func:`sweep_dir_for`): Tune's experiment
  directory, holding :data:`SWEEP_FILE` (the resolved sweep that ``resume`` reads) and one folder
  per trial (:func:`trial_dir`, named by the Tune trial id). It is also the key of the sweep's
  MLflow parent run (:func:`parent_run_key`, the ``raysweep.storage`` tag), so a resumed sweep
  finds its parent run again.
- The training loop's outputs go to ``<trial dir>/train/`` on a filesystem. When the sweep is on
  object storage the loop writes to a node-local scratch folder (:func:`trial_output_dir`) and the
  trial copies its files up to ``<trial dir>/train/`` in the bucket (:func:`upload_outputs`) with
  every checkpoint and at its end; a trial retried on another node first copies them down
  (:func:`download_outputs`), and the MLflow callback on the driver fetches them from there too: on
  a real cluster the driver never sees another node's scratch.
- :func:`check_storage` refuses, before Ray or any trial starts, an object storage whose bucket does
  not exist or whose credentials are refused.
- Files a sweep on object storage cannot keep beside its results (the Optuna SQLite database, the
  operating points before they are copied) go to its local twin ``./runs/<name>``
  (:func:`local_sweep_dir`).

This module is on the package's ground floor: every layer uses it, and it imports nothing of
raysweep (nor Ray) at run time.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raysweep.tune.sweep_config import SweepConfig

DEFAULT_STORAGE = "runs"  # relative to the working directory
SWEEP_FILE = "sweep.yaml"  # the resolved sweep in its directory (what `resume` reads)
TRIAL_OUTPUT_DIR = "train"  # the loop's outputs inside a trial's directory
RAY_TRAIN_DIR = "ray_train"  # a DDP trial's TorchTrainer run inside its directory (its checkpoints)
TUNE_CHECKPOINT_PREFIX = "checkpoint_"  # Tune's (and Ray Train's) checkpoint folders in a trial's directory
OPTUNA_DB = "optuna.db"
FILE_SCHEME = "file://"


# ------------------------------------------------------------------------------- URIs
def is_uri(path: str | Path) -> bool:
    """True for object storage (``s3://``, ``gs://``, any ``scheme://``); False for local paths,
    ``file://`` ones included."""
    text = str(path)
    return "://" in text and not text.startswith(FILE_SCHEME)


def local_path(path: str | Path) -> Path:
    """A local path or ``file://`` URI as an absolute path (``~`` expanded)."""
    return Path(str(path).removeprefix(FILE_SCHEME)).expanduser().resolve()


# ----------------------------------------------------------------------- sweep paths
def sweep_dir_for(storage: str | Path | None, name: str) -> str:
    """The sweep directory ``<storage>/<name>``: absolute for local storage (``storage`` defaults
    to ``./runs``), the URI with ``/<name>`` appended for object storage."""
    root = str(storage) if storage is not None else DEFAULT_STORAGE
    if not is_uri(root):
        root = str(local_path(root))
    return f"{root.rstrip('/')}/{name}"


def resolve_sweep_dir(sweep_dir: str | Path) -> str:
    """A sweep directory as given to ``resume``: absolute when local, without a trailing slash."""
    text = str(sweep_dir)
    return (text if is_uri(text) else str(local_path(text))).rstrip("/")


def split_sweep_dir(sweep_dir: str) -> tuple[str, str]:
    """``(storage, name)`` of a sweep directory (Tune's ``storage_path`` and experiment name)."""
    storage, _, name = sweep_dir.rstrip("/").rpartition("/")
    return storage, name


def parent_run_key(storage: str | Path, name: str) -> str:
    """The ``raysweep.storage`` tag that, with the sweep's name, identifies its MLflow parent run:
    the sweep directory (so the same sweep reached as ``file://`` or as a path is one run)."""
    return sweep_dir_for(storage, name)


def local_sweep_dir(sweep_dir: str, sweep_name: str) -> str:
    """`sweep_dir` when it is local, else its local twin ``./runs/<name>`` (for files that must
    be on this machine: the Optuna database, the operating points before they are copied)."""
    return sweep_dir if not is_uri(sweep_dir) else sweep_dir_for(None, sweep_name)


def optuna_storage_url(sweep: SweepConfig, sweep_dir: str) -> str | None:
    """The Optuna storage of a sweep that uses Optuna (``search.mode: optuna``, or matched rate
    with the optuna strategy): the configured URL, else SQLite in the sweep's local directory
    (:func:`local_sweep_dir`); None for the other sweeps."""
    search = sweep.search
    if not search.uses_optuna_storage:
        return None
    if search.optuna is not None and search.optuna.storage:
        return search.optuna.storage
    local = local_sweep_dir(sweep_dir, sweep.name)
    Path(local).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{local}/{OPTUNA_DB}"


# ----------------------------------------------------------------------- trial paths
def trial_dir(sweep_dir: str, trial_id: str) -> str:
    """A trial's directory in the sweep's storage (Tune's trial directory: named by the trial id)."""
    return f"{sweep_dir.rstrip('/')}/{trial_id}"


def trial_dirname(trial: Any) -> str:
    """Tune's ``trial_dirname_creator``: the trial id, as :func:`trial_dir` expects."""
    return str(trial.trial_id)


def trial_name(trial: Any) -> str:
    """Tune's ``trial_name_creator`` (the progress table's first column): the trial id."""
    return str(trial.trial_id)


def trial_scratch_dir(sweep_name: str, trial_id: str) -> Path:
    """The node-local folder of a trial's loop outputs when the sweep is on object storage."""
    return Path(tempfile.gettempdir()) / "raysweep" / sweep_name / trial_id / TRIAL_OUTPUT_DIR


def trial_output_dir(sweep_dir: str, sweep_name: str, trial_id: str) -> Path:
    """Where the training loop of a trial writes: ``<trial dir>/train`` when the sweep is on a
    filesystem, else :func:`trial_scratch_dir` (copied to :func:`trial_outputs_uri` by the trial)."""
    if not is_uri(sweep_dir):
        return Path(trial_dir(sweep_dir.removeprefix(FILE_SCHEME), trial_id)) / TRIAL_OUTPUT_DIR
    return trial_scratch_dir(sweep_name, trial_id)


def trial_outputs_uri(sweep_dir: str, trial_id: str) -> str | None:
    """``<trial dir>/train`` on object storage, where a trial on any node keeps its loop outputs;
    None when the sweep is on a filesystem (the loop writes there directly)."""
    if not is_uri(sweep_dir):
        return None
    return f"{trial_dir(sweep_dir, trial_id)}/{TRIAL_OUTPUT_DIR}"


def driver_outputs_dir(sweep_name: str, trial_id: str) -> Path:
    """The driver's local copy of a trial's outputs fetched from object storage (distinct from the
    trial's scratch folder, which on a cluster lives on another node)."""
    return Path(tempfile.gettempdir()) / "raysweep-driver" / sweep_name / trial_id / TRIAL_OUTPUT_DIR


# ------------------------------------------------------------------ object storage
def check_storage(uri: str) -> None:
    """Refuse object storage the sweep cannot write to, in one line naming `uri` and the fix: an
    unknown scheme, a bucket that does not exist, credentials the service refuses. A local path
    passes (its folders are created as needed)."""
    if not is_uri(uri):
        return
    import pyarrow.fs

    from raysweep.errors import RaysweepError

    try:
        fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    except (pyarrow.ArrowInvalid, pyarrow.ArrowNotImplementedError, OSError) as err:
        raise RaysweepError(f"--storage {uri}: pyarrow cannot open it ({err}): use s3://bucket/path, gs://bucket/path "
                            "or a local folder") from None
    bucket = inner.split("/", 1)[0]
    try:
        info = fs.get_file_info(bucket)
    except OSError as err:
        text = str(err)
        if "ACCESS_DENIED" in text or "403" in text or "InvalidAccessKeyId" in text or "credentials" in text.lower():
            raise RaysweepError(
                f"--storage {uri}: the credentials were refused for bucket {bucket}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / an IAM role; GOOGLE_APPLICATION_CREDENTIALS for gs://) to a "
                "principal allowed to read and write it"
            ) from None
        raise RaysweepError(f"--storage {uri}: cannot reach bucket {bucket} ({text.splitlines()[0]}): check "
                            "AWS_ENDPOINT_URL / the network, then retry") from None
    if info.type == pyarrow.fs.FileType.NotFound:
        raise RaysweepError(f"--storage {uri}: bucket {bucket} does not exist: create it (e.g. `aws s3 mb "
                            f"s3://{bucket}`) or fix the --storage URI")


def upload_outputs(local_dir: Path, uri: str) -> None:
    """Copy the files directly in `local_dir` (the loop's outputs; its ``checkpoints/`` folder is
    Tune's to persist) to the folder `uri` on object storage, replacing older copies."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    files = [path for path in sorted(Path(local_dir).glob("*")) if path.is_file()] if Path(local_dir).is_dir() else []
    if not files:
        return
    fs.create_dir(inner, recursive=True)
    for path in files:
        with fs.open_output_stream(f"{inner}/{path.name}") as handle:
            handle.write(path.read_bytes())


def download_outputs(uri: str, local_dir: Path) -> Path:
    """Copy the files directly in the object-storage folder `uri` into `local_dir` (created), so
    a trial continuing on another node, or the driver, reads them; returns `local_dir`."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    local_dir = Path(local_dir)
    local_dir.mkdir(parents=True, exist_ok=True)
    for info in fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True)):
        if info.type == pyarrow.fs.FileType.File:
            with fs.open_input_stream(info.path) as handle:
                (local_dir / info.base_name).write_bytes(handle.read())
    return local_dir


def folder_names(uri: str) -> list[str]:
    """The names of the folders directly in the object-storage folder `uri`, sorted ([] when it
    does not exist): a trial's checkpoint folders, which :func:`download_outputs` then copies down."""
    import pyarrow.fs

    fs, inner = pyarrow.fs.FileSystem.from_uri(uri)
    infos = fs.get_file_info(pyarrow.fs.FileSelector(inner, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.type == pyarrow.fs.FileType.Directory)


# -------------------------------------------------------------------------- text I/O
def write_text(path: str, text: str) -> None:
    """Write `text` to a local path or an object-storage URI (parent folders created)."""
    if is_uri(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        fs.create_dir(inner.rsplit("/", 1)[0], recursive=True)
        with fs.open_output_stream(inner) as handle:
            handle.write(text.encode())
        return
    file = local_path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text)


def read_text(path: str) -> str | None:
    """The text at a local path or an object-storage URI; None when there is no such file."""
    if is_uri(path):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(path)
        if fs.get_file_info(inner).type == pyarrow.fs.FileType.NotFound:
            return None
        with fs.open_input_stream(inner) as handle:
            return handle.read().decode()
    file = local_path(path)
    return file.read_text() if file.is_file() else None
