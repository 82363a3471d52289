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
from raysweep.tune.keys import flatten_once, nest
from raysweep.tune.resources import check_trials_fit
from raysweep.tune.space import check_generated_data, expand_sweep
from raysweep.tune.sweep_config import SweepConfig

SINGLE_KEY_PARENTS = ("search.grid.", "search.distributions.")


def apply_sweep_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw sweep mapping in place.

    Keys starting with a trial block (``train.max_steps=40``) go under ``trial``; others address the
    sweep file (``resources.workers=2``, ``search.seeds=[0,1]``). Under ``search.grid.`` and
    ``search.distributions.`` the rest of the key is one dotted trial key
    (``search.grid.objective.beta=[0.5,1]``). An override replaces the key however the file spells
    it; one key given twice in ``--set`` (``beta=...`` and ``trial.objective.beta=...``) with two
    different values, or a block and a key inside it, is refused with both spellings.
    """
    if isinstance(raw.get("trial"), dict):
        raw["trial"] = nest(flatten_once(raw["trial"], "trial"))
    given: dict[str, str] = {}  # the key each override sets -> the override as typed
    for text in overrides:
        key, value = parse_override(text)
        if key.split(".")[0] in TRIAL_BLOCKS:
            key = f"trial.{key}"
        _check_given_once(given, key, text, value)
        parent = next((p for p in SINGLE_KEY_PARENTS if key.startswith(p)), None)
        if parent is not None:
            node = raw
            for part in parent.rstrip(".").split("."):
                child = node.get(part)
                if not isinstance(child, dict):
                    child = node[part] = {}
                node = child
            inner = key[len(parent):]
            if parent == "search.grid.":
                # The grid may spell the axis nested or dotted: flatten it, so the override replaces it.
                flat = flatten_once(node, "search.grid")
                node.clear()
                node.update({k: v for k, v in flat.items() if not k.startswith(inner + ".")})
            node[inner] = value
        else:
            if raw.get("trial") is None and key.startswith("trial."):
                raw["trial"] = {}
            set_dotted(raw, key, value)
    return raw


def _check_given_once(given: dict[str, str], key: str, text: str, value: Any) -> None:
    """Refuse an override of a key (or of the block around it, or of a key inside it) that an earlier
    ``--set`` set to something else; the same value twice is accepted."""
    for other, earlier in given.items():
        if other == key and parse_override(earlier)[1] != value:
            raise RaysweepError(f"--set {earlier} and --set {text} both set {key}: give it once")
        if other.startswith(key + ".") or key.startswith(other + "."):
            raise RaysweepError(f"--set {earlier} and --set {text} both set {min(key, other, key=len)} (a block and "
                                "a key inside it): give the keys inside the block, or the block alone")
    given[key] = text


def sweep_from_dict(raw: dict[str, Any], source: str = "the sweep") -> SweepConfig:
    """Validate a raw sweep mapping (structure and every expanded trial); errors name `source`."""
    raw = copy.deepcopy(raw)
    if "trial" in raw and raw["trial"] is None:
        raw["trial"] = {}
    try:
        if isinstance(raw.get("trial"), dict):  # either spelling, nested or dotted, never both
            raw["trial"] = nest(flatten_once(raw["trial"], "trial"))
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
    if isinstance(raw["trial"], dict):
        try:
            raw["trial"] = nest(flatten_once(raw["trial"], "trial"))
        except RaysweepError as err:
            raise RaysweepError(f"{path}: {err}") from None
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
