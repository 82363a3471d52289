"""Names a person can read in MLflow's runs table: what varies in a sweep, and the seed.

A child run is named from the keys its sweep varies (grid, cells, seeds, distributions and the key
a matched-rate search sets itself), in that order, then its seed, for example
``box_blur λ=0.5 β=0.01 s0``. Well-known keys get the paper's symbols (λ, β, R*); a categorical
key whose value is a word (``loss.neural``, ``data.dataset``, ``model.arch``...) shows the word
alone; any other key shows the shortest tail of its dotted name that no other swept key shares
(``latent_dim=8``).

The name is a pure function of the sweep file and the trial's own config (and, where the sweep
samples, its trial id), so the tracking callback and ``raysweep sync`` give a trial the same name,
on a new sweep, a resume or a backfill, whichever comes first:

- **unique within the sweep.** A float keeps as many significant digits (at least 3) as it takes to
  tell apart the values the sweep file gives its key. Where the file alone does not fix each trial
  (random and Optuna draws, matched-rate probes, or two identical cells), the trial id is appended
  (``#e70464f7``): Tune's trial ids are unique, and no ordering enters, so the same trial always
  gets the same name.
- **short.** Only what varies: a key with one value in the sweep is left out.

:class:`RunNamer` is a picklable callable ``(trial id, trial config) -> name``; the config may be
the trial's Tune config (dotted keys, plus the matched-rate metadata) or its flat MLflow params.
It never raises: a config it cannot read is named by its trial id.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from raysweep import storage
from raysweep.tune.matched_rate.points import GECO_TARGET_KEY, META_KEY, TARGET_KEY
from raysweep.tune.modes import search_mode
from raysweep.tune.space import ExpandedSweep, expand_sweep
from raysweep.tune.sweep_config import SweepConfig

SEED_KEY = "train.seed"
#: The matched-rate target of a bisection or Optuna probe, which is not a trial key.
TARGET = TARGET_KEY
#: Keys shown by the paper's symbol.
SYMBOLS = {"loss.lambda_neural": "λ", "objective.beta": "β", GECO_TARGET_KEY: "R*", TARGET: "R*"}
#: Categorical keys whose value is shown alone (``box_blur``, not ``neural=box_blur``).
WORDS = ("loss.neural", "loss.pixel", "data.dataset", "model.arch", "model.preset")
MIN_DIGITS = 3  # significant digits of a float, at least
SAMPLED_DIGITS = 3  # ... of a sampled float (the trial id keeps the name unique)


@dataclass(frozen=True)
class RunNamer:
    """``namer(trial_id, config)``: a trial's run name (module docstring).

    Attributes:
        keys: the swept dotted keys, in display order (the seed is always added last).
        labels: key -> what stands before ``=`` ("" for a word shown alone).
        digits: key -> significant digits of a float value.
        with_id: append ``#<trial id>`` to every name (the sweep samples within a cell).
        ambiguous: names two cells of the file share: those trials get ``#<trial id>`` too.
        sweep_dir: where to read a trial's Tune ``params.json`` when the config given lacks the
            matched-rate target (flat params do), so ``sync`` names a probe as the callback did.
    """

    keys: tuple[str, ...]
    labels: Mapping[str, str]
    digits: Mapping[str, int]
    with_id: bool = False
    ambiguous: frozenset[str] = field(default_factory=frozenset)
    sweep_dir: str | None = None

    def __call__(self, trial_id: str, config: Mapping[str, Any]) -> str:
        try:
            values = dict(config)
            if TARGET in self.keys and META_KEY not in values:
                values.update(self._tune_config(trial_id))
            base = self.label(values)
        except Exception:  # noqa: BLE001 - a name must never cost a trial its run
            return str(trial_id)
        if self.with_id or base in self.ambiguous:
            return f"{base} #{trial_id}"
        return base

    def label(self, values: Mapping[str, Any]) -> str:
        """The name without the trial id, from a mapping of dotted keys."""
        parts = []
        for key in self.keys:
            value = _target(values) if key == TARGET else values.get(key)
            if value is None:  # e.g. R* of a fixed-beta cell beside GECO cells: nothing to say
                continue
            text = format_value(value, self.digits.get(key, MIN_DIGITS))
            label = self.labels[key]
            parts.append(f"{label}={text}" if label else text)
        seed = values.get(SEED_KEY)
        parts.append(f"s{seed}" if seed is not None else "s?")
        return " ".join(parts)

    def _tune_config(self, trial_id: str) -> dict[str, Any]:
        if self.sweep_dir is None:
            return {}
        text = storage.read_text(f"{storage.trial_dir(self.sweep_dir, trial_id)}/params.json")
        config = json.loads(text) if text else {}
        return {META_KEY: config[META_KEY]} if isinstance(config, dict) and META_KEY in config else {}


def _target(values: Mapping[str, Any]) -> Any:
    meta = values.get(META_KEY)
    return meta.get("target") if isinstance(meta, Mapping) else None


def format_value(value: Any, digits: int = MIN_DIGITS) -> str:
    """A value as a name shows it: a float to `digits` significant digits (``0.5``, ``1e-05``),
    anything else as text; a missing value as ``?``."""
    if value is None:
        return "?"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and math.isfinite(value):
        return format(value, f".{digits}g")
    if isinstance(value, list | dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _digits(values: list[Any]) -> int:
    """Fewest significant digits (at least :data:`MIN_DIGITS`) that keep `values` apart."""
    distinct = {repr(v): v for v in values}
    for digits in range(MIN_DIGITS, 18):
        if len({format_value(v, digits) for v in distinct.values()}) == len(distinct):
            return digits
    return 17


def _labels(keys: list[str], examples: Mapping[str, Any]) -> dict[str, str]:
    """Key -> its label: a symbol, "" for a word, else the shortest dotted tail no other key shares."""
    labels: dict[str, str] = {}
    others = [k for k in keys if k not in SYMBOLS]
    for key in keys:
        if key in SYMBOLS:
            labels[key] = SYMBOLS[key]
        elif key in WORDS and isinstance(examples.get(key), str):
            labels[key] = ""
        else:
            parts = key.split(".")
            for n in range(1, len(parts) + 1):
                tail = ".".join(parts[-n:])
                if not any(o != key and (o == tail or o.endswith("." + tail)) for o in others):
                    break
            labels[key] = tail
    return labels


def _determined(key: str, others: list[str], expanded: ExpandedSweep) -> bool:
    """Whether the cells' values of `others` fix `key`'s value (``data.root`` beside ``data.dataset``)."""
    seen: dict[str, str] = {}
    for cell in expanded.cells:
        rest, value = repr([cell.flat.get(k) for k in others]), repr(cell.flat.get(key))
        if seen.setdefault(rest, value) != value:
            return False
    return True


def swept_keys(sweep: SweepConfig, expanded: ExpandedSweep) -> list[str]:
    """The keys a sweep varies, in display order, the seed left out (it is always shown). A key
    without a symbol or a word to show is left out too where the other keys already tell its value."""
    keys = [k for k in expanded.varying_keys if k != SEED_KEY]
    for key in [k for k in keys if k not in SYMBOLS and k not in WORDS]:
        if _determined(key, [k for k in keys if k != key] + [SEED_KEY], expanded):
            keys.remove(key)
    keys += [k for k in expanded.distributions if k not in keys and k != SEED_KEY]
    return keys + [k for k in search_mode(sweep).searched_keys() if k not in keys]


def run_namer(sweep: SweepConfig, expanded: ExpandedSweep | None = None, sweep_dir: str | None = None) -> RunNamer:
    """The :class:`RunNamer` of `sweep` (`expanded`: its cells, when already expanded; `sweep_dir`:
    where its trials' Tune configs are, for ``sync``)."""
    expanded = expanded if expanded is not None else expand_sweep(sweep)
    mode = search_mode(sweep)
    searched = mode.searched_keys()
    keys = swept_keys(sweep, expanded)
    first = expanded.cells[0].flat
    labels = _labels(keys, first)
    digits = {}
    for key in keys:
        if key in expanded.distributions or key in searched and searched[key] is None:
            digits[key] = SAMPLED_DIGITS
        elif key in searched:
            digits[key] = _digits(list(searched[key] or []))
        else:
            digits[key] = _digits([c.flat.get(key) for c in expanded.cells])
    # Draws within a cell and probes of one (cell, target) are not fixed by the file (the mode says).
    with_id = mode.repeats_within_cell(expanded)
    namer = RunNamer(tuple(keys), labels, digits, with_id=with_id, sweep_dir=sweep_dir)
    names: dict[str, int] = {}
    for cell in expanded.cells:
        name = namer.label(cell.flat)
        names[name] = names.get(name, 0) + 1
    ambiguous = frozenset(n for n, count in names.items() if count > 1)
    return RunNamer(tuple(keys), labels, digits, with_id=with_id, ambiguous=ambiguous, sweep_dir=sweep_dir)
