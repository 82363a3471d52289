"""A run's trained VAE, loaded back: ``raysweep.load_run`` and ``raysweep export``.

A run is named by its MLflow run id, by its run name (within ``experiment=``, else in every
experiment of the store), or by its trial folder: a sweep's ``<sweep dir>/<trial id>/`` (a local
path or an object-storage URI) or a ``raysweep train --out`` folder. A trial's child run leads to its
folder through its own tags: ``raysweep.trial_id`` on the run and the sweep directory as
``raysweep.storage`` on its parent run (:mod:`raysweep.tracking.store`); the folder is
:func:`raysweep.storage.trial_dir` of the two.

In the folder the checkpoints are where each way of training keeps them (:data:`CHECKPOINT_PLACES`):
Tune's ``checkpoint_*/`` (one-worker trials), the ``ray_train/checkpoint_*/`` of a DDP trial's
TorchTrainer run, ``checkpoints/step_*/`` of ``raysweep train``. The newest intact one
(:func:`raysweep.train.checkpoint.checkpoint_problem`) gives the weights; a damaged newer one is
skipped with a warning. From object storage the checkpoints are copied down one at a time, newest
first, with :mod:`raysweep.storage`'s helpers. The config is the trial's own ``config.yaml`` (the
loop writes it, and the run carries it as an artifact too), validated as a
:class:`~raysweep.config.TrialConfig`; the metrics are its ``final.json``, else the run's MLflow
metrics, else the validation recorded with the checkpoint.

The model is built by :func:`raysweep.train.loop.build_trial_model`, the training loop's own
constructor. The image channels come from the dataset, not the config, so they are read from the
weights' first convolution; the weights are then loaded strictly: a checkpoint that does not fit its
config is refused rather than half loaded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raysweep.errors import RaysweepError
from raysweep.names import FINAL_SUMMARY, TRIAL_CONFIG
from raysweep.storage import (
    DEFAULT_STORAGE,
    RAY_TRAIN_DIR,
    TRIAL_OUTPUT_DIR,
    TUNE_CHECKPOINT_PREFIX,
    download_outputs,
    folder_names,
    is_uri,
    local_path,
    resolve_sweep_dir,
    split_sweep_dir,
    trial_dir,
)
from raysweep.tracking import store
from raysweep.tracking.results import read_json
from raysweep.tracking.store import (
    DB_FILE,
    PARENT_TAG,
    ROLE_SWEEP,
    ROLE_TAG,
    RUN_NAME_TAG,
    STORAGE_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
)
from raysweep.train.checkpoint import META_FILE
from raysweep.train.checkpoint import PREFIX as STEP_PREFIX

if TYPE_CHECKING:
    import torch
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from raysweep.config import TrialConfig
    from raysweep.models import VAE

logger = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[0-9a-f]{32}$")
#: Where a trial folder keeps its checkpoints, as (subfolder, name prefix), by who trained it: Tune
#: (one-worker trials), a DDP trial's TorchTrainer run, ``raysweep train``. Names sort oldest first.
CHECKPOINT_PLACES = (("", TUNE_CHECKPOINT_PREFIX), (RAY_TRAIN_DIR, TUNE_CHECKPOINT_PREFIX), ("checkpoints", STEP_PREFIX))
EXPORT_WEIGHTS = "model.safetensors"
#: What ``raysweep export`` writes into its folder.
EXPORT_FILES = (EXPORT_WEIGHTS, TRIAL_CONFIG, FINAL_SUMMARY)
MAX_LISTED = 10  # run ids listed in an ambiguous-name error


@dataclass(frozen=True)
class LoadedRun:
    """A run's trained model and what it was trained and measured with.

    Attributes:
        model: the VAE with the checkpoint's weights, in eval mode, on the requested device.
        config: its validated trial configuration (the trial's ``config.yaml``).
        metrics: its final metrics (``final.json``, else the run's MLflow metrics, else the
            validation recorded with the checkpoint); withheld metrics are ``None``.
        checkpoint: the checkpoint folder the weights came from (a path or a URI).
        run_id: its MLflow run id (None for a folder no tracking store knows).
        step: the optimiser step of the checkpoint.
        folder: the trial folder it was found in.
    """

    model: VAE = field(repr=False)
    config: TrialConfig = field(repr=False)
    metrics: Mapping[str, Any] = field(repr=False)
    checkpoint: str
    run_id: str | None
    step: int
    folder: str


def load_run(
    run: str | os.PathLike[str],
    *,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    storage: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> LoadedRun:
    """The trained model of a run, with its config and final metrics.

    Args:
        run: an MLflow run id; a run name (as MLflow's runs table shows it, e.g.
            ``"none λ=0 β=0.01 s0"``); or a trial folder: ``<sweep dir>/<trial id>`` (a path or an
            ``s3://``/``gs://`` URI) or a ``raysweep train --out`` folder.
        experiment: the MLflow experiment a run name is looked up in (default: every experiment).
        tracking_uri: the MLflow store (``sqlite:///...`` or ``http(s)://...``).
        storage: the sweep's storage folder, whose store is ``<storage>/mlflow.db``. Without either,
            ``./runs/mlflow.db``, else ``$MLFLOW_TRACKING_URI``. A trial folder needs no store (its
            run id is looked up in ``<storage>/mlflow.db`` beside its sweep when there is one).
        device: where the model goes (``map_location`` of the weights).

    Raises:
        RaysweepError: in one line: an unknown run id or run name, a name several runs share (their
            ids listed), a sweep's parent run, a run whose checkpoint was not kept (the folder
            looked in named), a damaged checkpoint, a missing or invalid ``config.yaml``.
    """
    text = os.fspath(run)
    if isinstance(run, os.PathLike) or is_uri(text) or local_path(text).is_dir():
        folder = text.rstrip("/") if is_uri(text) else str(local_path(text))
        client, found = _run_of_folder(folder, tracking_uri, storage)
        return _load(folder, device, client, found)
    client = store.make_client(_store_uri(text, tracking_uri, storage))
    found = _find_run(client, text, experiment)
    return _load(_trial_folder(client, found), device, client, found)


def model_from_weights(config: TrialConfig, weights: Mapping[str, Any], label: str = "the weights") -> VAE:
    """The VAE `config` describes, holding `weights` (its state dict: a checkpoint's ``model`` entry
    or an export's ``model.safetensors``), in eval mode; a one-line error when they do not fit."""
    import torch

    from raysweep.train.loop import build_trial_model

    # The encoder's first convolution, (out, in, k, k), reads the images, so its `in` is their channels.
    # Which key it is: the first 4-d weight of the model in its own (registration) order, found on a
    # shape-only copy (meta device: nothing allocated); `weights` may come in any order (safetensors sorts).
    with torch.device("meta"):
        probe = build_trial_model(config, 1)
    first = next((key for key, value in probe.state_dict().items() if value.ndim == 4), None)
    shape = getattr(weights.get(first), "shape", ()) if first is not None else ()
    if len(shape) != 4:
        raise RaysweepError(f"{label}: no {first} convolution weight of 4 dimensions, so they are no weights of the "
                            f"{config.model.arch} its config describes")
    model = build_trial_model(config, int(shape[1]))
    try:
        model.load_state_dict(dict(weights))
    except RuntimeError as err:
        reason = " ".join(str(err).split())
        raise RaysweepError(f"{label} do not fit the model its config describes ({reason[:300]}): the weights and "
                            "the config must come from the same run") from None
    return model.eval()


def check_export_dir(out: str | Path) -> Path:
    """`out` as an export folder: refused in one line when it exists and is not an empty folder."""
    out = Path(out).expanduser()
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise RaysweepError(f"--out {out} already exists: choose a new folder (an export is written whole, "
                            "never into a folder that holds files)")
    return out


def export_run(loaded: LoadedRun, out: str | Path) -> Path:
    """Write `loaded` as ``out/model.safetensors``, ``out/config.yaml`` (loadable by ``raysweep
    train`` and :func:`raysweep.config.load_trial_config`) and ``out/final.json``, atomically: into a
    temporary folder beside `out`, renamed into place, so no half-written export remains."""
    from safetensors.torch import save

    from raysweep.config import dump_yaml

    out = check_export_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        tensors = {key: value.detach().to("cpu").contiguous() for key, value in loaded.model.state_dict().items()}
        metadata = {"raysweep.run_id": loaded.run_id or "", "raysweep.step": str(loaded.step),
                    "raysweep.checkpoint": loaded.checkpoint}
        # as bytes, written like the other files (save_file would create it readable by its owner only)
        (tmp / EXPORT_WEIGHTS).write_bytes(save(tensors, metadata=metadata))
        dump_yaml(loaded.config, tmp / TRIAL_CONFIG)
        (tmp / FINAL_SUMMARY).write_text(json.dumps(dict(loaded.metrics), indent=2, sort_keys=True))
        if out.is_dir():
            out.rmdir()  # the empty folder it replaces
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# ------------------------------------------------------------------------------ the run
def _store_uri(what: str, tracking_uri: str | None, storage: str | os.PathLike[str] | None) -> str:
    """The store to look `what` up in: `tracking_uri`, `storage`, ``./runs``, ``$MLFLOW_TRACKING_URI``."""
    if tracking_uri or storage is not None:
        return store.resolve_tracking_uri(tracking_uri, storage)
    if (Path(DEFAULT_STORAGE) / DB_FILE).is_file():
        return store.resolve_tracking_uri(None, DEFAULT_STORAGE)
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return store.resolve_tracking_uri(None, None)
    raise RaysweepError(
        f"run {what!r}: no tracking store to look it up in (no ./{DEFAULT_STORAGE}/{DB_FILE} here): pass storage= "
        "(--storage, the sweep's storage folder) or tracking_uri= (--tracking-uri), or the run's trial folder"
    )


def _store_error(client: MlflowClient, err: Exception) -> RaysweepError:
    if store.is_unreachable(err):
        return RaysweepError(store.unreachable_message(client.tracking_uri, err))
    return RaysweepError(f"cannot read the tracking store {client.tracking_uri}: {store.error_reason(err)}")


def _get_run(client: MlflowClient, run_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise _store_error(client, err) from None
    except Exception as err:  # noqa: BLE001 - a store that does not answer becomes one line
        raise _store_error(client, err) from None
    return None if run.info.lifecycle_stage == "deleted" else run


def _find_run(client: MlflowClient, text: str, experiment: str | None) -> Run:
    """The run whose id or name is `text` (in `experiment` when given)."""
    if RUN_ID.match(text):
        run = _get_run(client, text)
        if run is not None:
            return run
    if experiment:
        ids, where = [store.find_experiment(client, experiment)], f"experiment {experiment!r} of {client.tracking_uri}"
    else:
        try:
            ids = [e.experiment_id for e in client.search_experiments()]
        except Exception as err:  # noqa: BLE001 - any store failure becomes one line
            raise _store_error(client, err) from None
        where = client.tracking_uri
    try:
        runs = store.search_all(client, ids, f"tags.`{RUN_NAME_TAG}` = {store.quote(text)}") if ids else []
    except Exception as err:  # noqa: BLE001
        raise _store_error(client, err) from None
    if not runs:
        kind = "run id or run name" if RUN_ID.match(text) else "run name"
        raise RaysweepError(
            f"run {text!r}: no run has this {kind} in {where}: copy the run id or name from MLflow's UI, "
            "or check storage= / tracking_uri= (--storage / --tracking-uri)"
        )
    if len(runs) > 1:
        runs = sorted(runs, key=lambda r: r.info.start_time)
        listed = ", ".join(f"{r.info.run_id} (sweep {r.data.tags.get(SWEEP_TAG, '?')}, experiment "
                           f"{r.info.experiment_id})" for r in runs[:MAX_LISTED])
        more = f" and {len(runs) - MAX_LISTED} more" if len(runs) > MAX_LISTED else ""
        raise RaysweepError(f"run name {text!r} is ambiguous: {len(runs)} runs in {where} have it; pass one run id: "
                            f"{listed}{more}")
    return runs[0]


def _label(run: Run | None, folder: str) -> str:
    if run is None:
        return f"trial folder {folder}"
    return f"run {run.info.run_id} ({run.info.run_name})"


def _trial_folder(client: MlflowClient, run: Run) -> str:
    """The trial folder of a child run, from its tags and its parent's."""
    tags, label = run.data.tags, _label(run, "")
    if tags.get(ROLE_TAG) == ROLE_SWEEP:
        raise RaysweepError(f"{label} is the parent run of sweep {tags.get(SWEEP_TAG)}, which holds no model: load one "
                            "of its trial runs (MLflow's UI lists them under it)")
    trial_id, parent_id = tags.get(TRIAL_ID_TAG), tags.get(PARENT_TAG)
    if not trial_id or not parent_id:
        raise RaysweepError(f"{label} has no {TRIAL_ID_TAG} or {PARENT_TAG} tag, so it is no trial of a raysweep "
                            "sweep: pass its trial folder instead")
    parent = _get_run(client, parent_id)
    sweep_dir = parent.data.tags.get(STORAGE_TAG) if parent is not None else None
    if not sweep_dir:
        raise RaysweepError(f"{label}: its parent run {parent_id} is gone or has no {STORAGE_TAG} tag, so its sweep "
                            "folder is unknown: pass its trial folder (<sweep dir>/<trial id>) instead")
    return trial_dir(sweep_dir, trial_id)


def _run_of_folder(folder: str, tracking_uri: str | None,
                   storage: str | os.PathLike[str] | None) -> tuple[MlflowClient | None, Run | None]:
    """The child run of the trial folder `folder`, looked up in the given store, else in the sweep's
    default store ``<storage>/mlflow.db`` when there is one; (None, None) when no store knows it."""
    sweep_dir, trial_id = split_sweep_dir(folder)
    if tracking_uri or storage is not None:
        uri = store.resolve_tracking_uri(tracking_uri, storage)
    elif not is_uri(folder) and (Path(split_sweep_dir(sweep_dir)[0]) / DB_FILE).is_file():
        uri = store.resolve_tracking_uri(None, split_sweep_dir(sweep_dir)[0])
    else:
        return None, None
    client = store.make_client(uri)
    try:
        ids = [e.experiment_id for e in client.search_experiments()]
        runs = store.search_all(client, ids, f"tags.`{TRIAL_ID_TAG}` = {store.quote(trial_id)}") if ids else []
    except Exception as err:  # noqa: BLE001 - any store failure becomes one line
        raise _store_error(client, err) from None
    wanted = resolve_sweep_dir(sweep_dir)
    for run in sorted(runs, key=lambda r: r.info.start_time):  # the oldest, as find_child_run picks
        parent = _get_run(client, run.data.tags.get(PARENT_TAG, "")) if run.data.tags.get(PARENT_TAG) else None
        tag = parent.data.tags.get(STORAGE_TAG) if parent is not None else None
        if tag and resolve_sweep_dir(tag) == wanted:
            return client, run
    return client, None


# --------------------------------------------------------------------------- the folder
def _entries(base: str) -> list[str]:
    """The folder names directly in `base` (a path or a URI), sorted."""
    if is_uri(base):
        return folder_names(base)
    path = Path(base)
    return sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []


def checkpoint_folders(folder: str) -> list[str]:
    """The checkpoint folders of a trial folder (a path or a URI), newest first: those of the first
    of :data:`CHECKPOINT_PLACES` that has any."""
    for sub, prefix in CHECKPOINT_PLACES:
        base = f"{folder}/{sub}" if sub else folder
        names = [n for n in _entries(base) if n.startswith(prefix) and len(n) > len(prefix)]
        if names:
            return [f"{base}/{name}" for name in reversed(names)]
    return []


@contextmanager
def _local_copy() -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix="raysweep_load_"))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch(folder: str, tmp: Path, name: str) -> Path:
    """`folder` on this machine: itself, or its files copied down from object storage into `tmp/name`."""
    return download_outputs(folder, tmp / name) if is_uri(folder) else Path(folder)


def _newest_intact(folder: str, tmp: Path, label: str) -> tuple[str, Path]:
    """The newest intact checkpoint of `folder`: (its path or URI, a local folder holding it)."""
    from raysweep.train.checkpoint import checkpoint_problem

    candidates = checkpoint_folders(folder)
    if not candidates:
        gone = "" if _exists(folder) else " (the folder itself is gone)"
        places = ", ".join(f"{sub + '/' if sub else ''}{prefix}*/" for sub, prefix in CHECKPOINT_PLACES)
        raise RaysweepError(
            f"{label}: no checkpoint was kept in {folder}{gone}; looked for {places}: checkpoint.num_to_keep deleted "
            "it, or the trial stopped before its first validation, so its model is lost: train it again"
        )
    skipped: list[str] = []
    for i, candidate in enumerate(candidates):
        local = _fetch(candidate, tmp, f"checkpoint_{i}")
        problem = checkpoint_problem(local)
        if problem is None:
            return candidate, local
        skipped.append(f"{candidate}: {problem}")
        logger.warning("%s: skipping damaged checkpoint %s (%s)", label, candidate, problem)
    raise RaysweepError(f"{label}: no intact checkpoint in {folder} (the newest: {skipped[0]}; {len(skipped)} damaged "
                        "in all): its model cannot be loaded: train it again")


def _exists(folder: str) -> bool:
    if is_uri(folder):
        import pyarrow.fs

        fs, inner = pyarrow.fs.FileSystem.from_uri(folder)
        return fs.get_file_info(inner).type != pyarrow.fs.FileType.NotFound
    return Path(folder).is_dir()


def _output_dirs(folder: str, tmp: Path) -> list[Path]:
    """The local folders that may hold the loop's ``config.yaml`` and ``final.json``: the trial
    folder's ``train/`` (a sweep's trial), then the folder itself (``raysweep train --out``), each
    copied down from object storage only while the files are still missing."""
    dirs: list[Path] = []
    for i, sub in enumerate((TRIAL_OUTPUT_DIR, "")):
        dirs.append(_fetch(f"{folder}/{sub}" if sub else folder, tmp, f"outputs_{i}"))
        if all((dirs[-1] / name).is_file() for name in (TRIAL_CONFIG, FINAL_SUMMARY)):
            break
    return dirs


def _first_file(dirs: list[Path], name: str) -> Path | None:
    return next((d / name for d in dirs if (d / name).is_file()), None)


def _config_file(dirs: list[Path], client: MlflowClient | None, run: Run | None, tmp: Path, label: str,
                 folder: str) -> Path:
    """The trial's ``config.yaml``: in its folder, else among its run's artifacts."""
    found = _first_file(dirs, TRIAL_CONFIG)
    if found is None and client is not None and run is not None:
        names = {Path(a.path).name for a in client.list_artifacts(run.info.run_id)}
        if TRIAL_CONFIG in names:
            found = Path(client.download_artifacts(run.info.run_id, TRIAL_CONFIG, str(tmp)))
    if found is None:
        raise RaysweepError(f"{label}: no {TRIAL_CONFIG} in {folder} (nor in its train/ or the run's artifacts), and "
                            "the model cannot be built without its trial config")
    return found


def _metrics(dirs: list[Path], run: Run | None, checkpoint: Path) -> dict[str, Any]:
    """``final.json``, else the run's MLflow metrics, else the checkpoint's own validation."""
    final = read_json(_first_file(dirs, FINAL_SUMMARY))
    if final is not None:
        return final
    if run is not None and run.data.metrics:
        return dict(run.data.metrics)
    meta = read_json(checkpoint / META_FILE) or {}
    return dict(meta.get("metrics") or {})


def _load(folder: str, device: str | torch.device, client: MlflowClient | None, run: Run | None) -> LoadedRun:
    from raysweep.config import load_trial_config
    from raysweep.train.checkpoint import load_checkpoint

    label = _label(run, folder)
    with _local_copy() as tmp:
        checkpoint, local = _newest_intact(folder, tmp, label)
        dirs = _output_dirs(folder, tmp)
        config = load_trial_config(_config_file(dirs, client, run, tmp, label, folder))
        metrics = _metrics(dirs, run, local)
        state = load_checkpoint(local, map_location=device)
        weights = state.get("model") if isinstance(state, dict) else None
        if not isinstance(weights, Mapping):
            raise RaysweepError(f"{label}: {checkpoint} holds no model weights (no 'model' entry in its state.pt)")
        model = model_from_weights(config, weights, f"{label}: the weights of {checkpoint}").to(device)
    return LoadedRun(model=model, config=config, metrics=metrics, checkpoint=checkpoint,
                     run_id=run.info.run_id if run is not None else None, step=int(state.get("step", -1)),
                     folder=folder)
