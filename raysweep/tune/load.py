"""Reading and writing sweep files: ``--set`` overrides, validation of the whole sweep (its
structure and every expanded trial), the resolved ``sweep.yaml`` of a sweep directory.

:func:`load_sweep` is what ``raysweep sweep`` and ``raysweep validate`` call; :func:`sweep_from_dict`
validates a mapping (a test's, a benchmark's, or ``sweep.yaml`` read back by ``resume``). Neither
imports Ray.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from raysweep import storage
from raysweep.config import TRIAL_BLOCKS, parse_override, read_yaml, set_dotted, validate_model
from raysweep.errors import RaysweepError
from raysweep.tune.resources import check_trials_fit
from raysweep.tune.space import check_generated_data, expand_sweep
from raysweep.tune.sweep_config import SweepConfig

SINGLE_KEY_PARENTS = ("search.grid.", "search.distributions.")


def apply_sweep_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw sweep mapping in place.

    Keys starting with a trial block (``train.max_steps=40``) go under ``trial``; others address the
    sweep file (``resources.workers=2``, ``search.seeds=[0,1]``). Under ``search.grid.`` and
    ``search.distributions.`` the rest of the key is one dotted trial key
    (``search.grid.objective.beta=[0.5,1]``).
    """
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] in TRIAL_BLOCKS:
            key = f"trial.{key}"
        parent = next((p for p in SINGLE_KEY_PARENTS if key.startswith(p)), None)
        if parent is not None:
            node = raw
            for part in parent.rstrip(".").split("."):
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            node[key[len(parent):]] = value
        else:
            if raw.get("trial") is None and key.startswith("trial."):
                raw["trial"] = {}
            set_dotted(raw, key, value)
    return raw


def sweep_from_dict(raw: dict[str, Any], source: str = "the sweep") -> SweepConfig:
    """Validate a raw sweep mapping (structure and every expanded trial); errors name `source`."""
    raw = copy.deepcopy(raw)
    if "trial" in raw and raw["trial"] is None:
        raw["trial"] = {}
    try:
        if "name" not in raw:
            raise RaysweepError("name: required: give the sweep a name (e.g. name: my_sweep)")
        sweep = validate_model(SweepConfig, raw)
        expanded = expand_sweep(sweep)
        check_trials_fit(expanded, sweep.resources)
        check_generated_data(expanded)
    except RaysweepError as err:
        raise RaysweepError(f"{source}: {err}") from None
    return sweep


def load_sweep(path: str | Path, overrides: list[str] | None = None, name: str | None = None) -> SweepConfig:
    """Read a sweep YAML, apply ``--set`` overrides and ``--name``, validate everything."""
    raw = read_yaml(path)
    if "trial" not in raw:
        raise RaysweepError(f"{path}: not a sweep file (no `trial` block); `raysweep train` runs a single trial file")
    apply_sweep_overrides(raw, overrides or [])
    if name is not None:
        raw["name"] = name
    return sweep_from_dict(raw, source=str(path))


def dump_sweep(sweep: SweepConfig) -> str:
    """The resolved sweep as YAML text (written as ``sweep.yaml`` in the sweep directory)."""
    return yaml.safe_dump(sweep.to_dict(), sort_keys=False)


def load_sweep_dir(sweep_dir: str) -> SweepConfig:
    """The resolved sweep a sweep directory was started with (its ``sweep.yaml``, local or remote)."""
    path = f"{sweep_dir}/{storage.SWEEP_FILE}"
    text = storage.read_text(path)
    if text is None:
        raise RaysweepError(f"{sweep_dir}: no {storage.SWEEP_FILE}: not a raysweep sweep directory (runs/<name>)")
    return sweep_from_dict(yaml.safe_load(text) or {}, source=path)
