"""``raysweep prepare SWEEP``: build every prepared image cache a sweep's trials will read, before
the cluster job starts, so no trial waits on a decode (see :mod:`raysweep.data.cache`).

The sweep is validated and expanded exactly as ``raysweep sweep`` does (without Ray); each distinct
data block of its cells (and of the ``choice`` values of sampled ``data.*`` keys) that reads a
folder dataset with ``data.cache`` on names one training and one validation cache, built by the
same :func:`~raysweep.data.build_datasets` the trials call, so the files are the ones they look for.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raysweep.config import DataConfig
from raysweep.data import build_datasets
from raysweep.data.cache import CachedImages
from raysweep.errors import RaysweepError
from raysweep.registry import DATASETS
from raysweep.tune.load import load_sweep
from raysweep.tune.space import expand_sweep, trial_config_from_params
from raysweep.tune.sweep_config import SweepConfig

# Keys that do not change which images a cache holds (how they are read or augmented, or
# xysquares-only settings), left out when telling data blocks apart.
_IRRELEVANT_DATA_KEYS = ("data.hflip", "data.num_workers", "data.latent_sample_size", "data.xysquares.")


def default_workers() -> int:
    """Decode processes for ``raysweep prepare``: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _relevant(flat: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(
        (k, repr(v)) for k, v in flat.items() if k.startswith("data.") and not k.startswith(_IRRELEVANT_DATA_KEYS)
    ))


def sweep_data_configs(sweep: SweepConfig) -> list[DataConfig]:
    """The distinct data blocks with a prepared cache among the trials of ``sweep``, in cell order.

    A ``data.*`` key sampled from a ``choice`` contributes each of its values; one sampled from a
    continuous range cannot be listed ahead and is refused (a one-line RaysweepError)."""
    choices: dict[str, list[Any]] = {}
    for key, dist in sweep.search.distributions.items():
        if not key.startswith("data.") or key.startswith(_IRRELEVANT_DATA_KEYS):
            continue
        if dist.choice is None:
            raise RaysweepError(
                f"search.distributions.{key}: a {dist.kind} range over a data key gives caches that cannot be "
                "listed ahead: sample it with choice, or put its values in search.grid"
            )
        choices[key] = list(dist.choice)
    seen: set[tuple[tuple[str, str], ...]] = set()
    configs: list[DataConfig] = []
    for cell in expand_sweep(sweep).cells:
        for values in itertools.product(*choices.values()):
            flat = {**cell.flat, **dict(zip(choices, values, strict=True))}
            data = trial_config_from_params(flat).data
            if not (DATASETS[data.dataset].cacheable and data.cache):
                continue
            identity = _relevant(flat)
            if identity not in seen:
                seen.add(identity)
                configs.append(data)
    return configs


def describe(dataset: CachedImages) -> str:
    """One line for a cache: built (with its seconds) or already prepared."""
    prepared = dataset.prepared
    what = f"{prepared.count} images at {prepared.image_size} px ({prepared.megabytes:.1f} MB)"
    if prepared.built:
        rate = prepared.count / max(prepared.seconds, 1e-9)
        return f"prepared {prepared.array_path}: {what} in {prepared.seconds:.1f} s ({rate:.0f} img/s)"
    return f"already prepared {prepared.array_path}: {what}"


def prepare_sweep(
    path: str | Path,
    overrides: list[str] | None = None,
    *,
    workers: int | None = None,
    progress: bool | None = None,
    echo: Callable[[str], None] = print,
) -> list[CachedImages]:
    """Build (or find) every prepared cache the sweep at ``path`` needs, saying one line per cache.

    Args:
        path: the sweep YAML; ``overrides`` are its ``--set`` assignments.
        workers: decode processes (default :func:`default_workers`).
        progress: a tqdm bar on stderr per cache built (default: when stderr is a terminal).
        echo: where the lines go.

    Bad input (a missing or empty ``data.root``, an unreadable image, an unwritable
    ``data.cache_dir``) raises a one-line RaysweepError naming it.
    """
    if workers is not None and workers < 0:
        raise RaysweepError(f"--workers {workers}: give 0 (decode in this process) or more processes")
    sweep = load_sweep(path, overrides)
    configs = sweep_data_configs(sweep)
    if not configs:
        echo(f"nothing to prepare: no trial of {path} reads a folder dataset with data.cache on")
        return []
    chosen = default_workers() if workers is None else workers
    show = sys.stderr.isatty() if progress is None else progress
    done: list[CachedImages] = []
    listed: set[Path] = set()
    for data in configs:
        try:
            datasets = build_datasets(data.model_copy(update={"num_workers": chosen}), progress=show)
        except RaysweepError as err:
            raise RaysweepError(f"{path} ({data.dataset} at {data.root}, {data.image_size} px): {err}") from None
        for dataset in datasets:
            assert isinstance(dataset, CachedImages), f"data.cache is on but {type(dataset).__name__} is not cached"
            if dataset.prepared.array_path not in listed:
                listed.add(dataset.prepared.array_path)
                done.append(dataset)
                echo(describe(dataset))
    return done
