"""What a Tune trial's config, results and output files mean for MLflow: params, metrics, status,
and where its files are found on the driver."""

from __future__ import annotations

import json
import numbers
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from raysweep.config import flatten
from raysweep.names import TRIAL_ARTIFACTS
from raysweep.storage import is_uri, local_path
from raysweep.tracking.store import metric_name

#: Files of a trial's output folder logged as artifacts when it ends (those that exist).
ARTIFACT_FILES = TRIAL_ARTIFACTS
#: Tune's bookkeeping keys of a result, not measurements of the model.
TUNE_KEYS = frozenset({
    "done", "training_iteration", "iterations_since_restore", "timestamp", "time_this_iter_s",
    "time_since_restore", "pid", "should_checkpoint", "checkpoint_dir_name", "date", "hostname", "node_ip",
    "trial_id", "experiment_tag", "config", "experiment_id",
})
#: raysweep status tag -> MLflow run status.
MLFLOW_STATUS = {"finished": "FINISHED", "diverged": "FAILED", "error": "FAILED", "early_stopped": "KILLED"}
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten_params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's Tune config as flat dotted keys (``loss.lambda_neural``, ``objective.beta``...).

    Accepts a nested trial mapping (as :meth:`TrialConfig.to_dict`), keys that are dotted already,
    or both: a base trial under ``trial`` with dotted search axes beside it, which win. Keys
    starting with ``_`` are private to the trainable and left out; an empty mapping has no value
    to log and is left out too.
    """
    flat: dict[str, Any] = {}
    base = config.get("trial")
    if isinstance(base, Mapping):
        flat.update(flatten(base, private=False, empty_blocks=False))
        config = {k: v for k, v in config.items() if k != "trial"}
    flat.update(flatten(config, private=False, empty_blocks=False))
    return flat


def param_text(value: Any) -> str:
    """A param value as MLflow stores it (lists and mappings as JSON), cut to MLflow's limit."""
    text = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return text[:MAX_PARAM_LENGTH]


def numeric_metrics(result: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numeric entries of a Tune result under MLflow-valid names (nested dicts joined by ``/``;
    Tune's bookkeeping keys and booleans left out; NaN and infinities kept: MLflow stores them)."""
    out: dict[str, float] = {}
    for key, value in result.items():
        if not prefix and key in TUNE_KEYS:
            continue
        if isinstance(value, Mapping):
            out.update(numeric_metrics(value, f"{prefix}{key}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool):
            out[metric_name(f"{prefix}{key}")] = float(value)
    return out


def result_step(result: Mapping[str, Any]) -> int:
    """The training step of a result (``step``), else Tune's ``training_iteration``."""
    value = result.get("step", result.get("training_iteration", 0))
    return int(value) if isinstance(value, numbers.Real) else 0


def read_json(path: Path | None) -> dict[str, Any] | None:
    """A JSON object from `path`, or None when absent or unreadable."""
    if path is None:
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_yaml_params(path: Path | None) -> dict[str, Any]:
    """Flat dotted params of a trial's ``config.yaml`` ({} when absent or unreadable)."""
    if path is None:
        return {}
    import yaml

    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return flatten_params(raw) if isinstance(raw, dict) else {}


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def reached_end(last: Mapping[str, Any], params: Mapping[str, Any]) -> bool:
    """Whether the last result reached the run length the config asks for (``train.max_steps``
    steps or ``train.epochs`` epochs, the smaller winning)."""
    step, epoch = _number(last.get("step")), _number(last.get("epoch"))
    max_steps, epochs = _number(params.get("train.max_steps")), _number(params.get("train.epochs"))
    if step is not None and max_steps is not None and step >= max_steps:
        return True
    return epoch is not None and epochs is not None and epoch >= epochs - 1e-9


def trial_status(
    final: Mapping[str, Any] | None, last: Mapping[str, Any], params: Mapping[str, Any], stopped_by_tune: bool
) -> str:
    """``finished``, ``diverged`` or ``early_stopped`` for a trial Tune reports complete.

    The trial's ``final.json`` decides when it is there. Otherwise a trial that reached its
    configured length finished (ASHA also "stops" a trial whose last validation reaches its
    ``max_t``); one that Tune stopped (`stopped_by_tune`: a scheduler such as ASHA or a stopper
    marked a result ``done`` before the callbacks saw it) stopped early; one whose trainable
    returned by itself finished.
    """
    for source in (final or {}, last):
        if source.get("status") in ("finished", "diverged"):
            return str(source["status"])
    if reached_end(last, params) or not stopped_by_tune:
        return "finished"
    return "early_stopped"


def _local_dir(value: Any) -> Path | None:
    if value and not is_uri(value) and local_path(value).is_dir():
        return local_path(value)
    return None


#: Where, inside a trial folder, the training loop's outputs may be: the folder itself, or the
#: ``train/`` folder raysweep's sweep runner gives the loop.
OUTPUT_SUBDIRS = ("", "train")


def local_trial_dirs(trial: Any, extra: Sequence[str | Path] = ()) -> list[Path]:
    """Folders on the driver that may hold a trial's output files, best first: `extra` (folders
    the sweep runner names), then, each with its :data:`OUTPUT_SUBDIRS`, the trial's folder on the
    driver (Tune's ``trial.local_path``, where ``tune.get_context().get_trial_dir()`` points on this
    node) and its folder in storage (``trial.path``) when that is local."""
    candidates: list[Any] = list(extra)
    for attr in ("local_path", "path"):
        try:
            base = getattr(trial, attr)
        except Exception:  # noqa: BLE001 - Tune raises when a trial has no storage yet
            continue
        if base:
            candidates.extend(Path(base) / sub if sub else base for sub in OUTPUT_SUBDIRS)
    folders: list[Path] = []
    for candidate in candidates:
        folder = _local_dir(candidate)
        if folder is not None and folder not in folders:
            folders.append(folder)
    return folders


@contextmanager
def trial_dirs(trial: Any, extra: Sequence[str | Path] = ()) -> Iterator[list[Path]]:
    """:func:`local_trial_dirs` plus the trial's latest checkpoint (the way files travel from a
    trial on another node: report a final checkpoint that holds them)."""
    folders = local_trial_dirs(trial, extra)
    checkpoint = getattr(trial, "checkpoint", None)
    if checkpoint is None:
        yield folders
        return
    try:
        context = checkpoint.as_directory()
        checkpoint_dir = context.__enter__()
    except (OSError, RuntimeError, ValueError):
        yield folders
        return
    try:
        yield folders + [Path(checkpoint_dir)]
    finally:
        context.__exit__(None, None, None)


def find_files(folders: list[Path], names: tuple[str, ...]) -> dict[str, Path]:
    """For each of `names`, the first of `folders` holding it (names found nowhere are left out)."""
    found: dict[str, Path] = {}
    for name in names:
        for folder in folders:
            if (folder / name).is_file():
                found[name] = folder / name
                break
    return found
