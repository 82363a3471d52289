"""Which trials the newest Tune experiment of a sweep directory runs, for a sweep that grew.

``raysweep extend`` (:mod:`raysweep.tune.extend`) runs the trials it adds as a new Tune experiment
in the sweep directory, restricted to the new cells of the grown sweep, and records their indices
in ``extension.json`` beside ``sweep.yaml``. ``raysweep resume`` restores the newest experiment,
so it reads that record to count what that experiment must run (:func:`newest_experiment_cells`);
a sweep that never grew has no record and its newest experiment runs every cell.

This module imports neither Ray nor the sweep runner, so the runner and ``extend`` both import it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from raysweep import storage
from raysweep.tune.space import Cell, ExpandedSweep

EXTENSION_FILE = "extension.json"


@dataclass(frozen=True)
class NewCells(ExpandedSweep):
    """The cells an extension adds, shown and suggested with every key the grown sweep varies
    (a new seed alone still gets its grid values), so its Tune configs match the grown param space."""

    grown_varying_keys: tuple[str, ...] = ()

    @property
    def varying_keys(self) -> list[str]:
        return list(self.grown_varying_keys)


def identity(cell: Cell) -> str:
    """What makes two cells the same trial: their complete flat trial config."""
    return repr(sorted(cell.flat.items()))


def restricted(grown: ExpandedSweep, cells: list[Cell]) -> NewCells:
    """`cells` of the grown sweep `grown`, as the expansion an extension runs."""
    return NewCells(cells=cells, distributions={}, samples_per_cell=1, grown_varying_keys=tuple(grown.varying_keys))


def write_extension(sweep_dir: str, grown: ExpandedSweep, new_cells: ExpandedSweep) -> None:
    """Record which cells of the grown sweep the extension about to run adds."""
    record = {"cells": [cell.index for cell in new_cells.cells], "trials_before": grown.num_trials - new_cells.num_trials,
              "trials_after": grown.num_trials}
    storage.write_text(f"{sweep_dir}/{EXTENSION_FILE}", json.dumps(record, indent=1) + "\n")


def newest_experiment_cells(sweep_dir: str, expanded: ExpandedSweep) -> ExpandedSweep:
    """The cells the newest Tune experiment in `sweep_dir` runs: those its ``extension.json``
    lists, else all of `expanded` (the sweep as its ``sweep.yaml`` describes it)."""
    text = storage.read_text(f"{sweep_dir}/{EXTENSION_FILE}")
    if text is None:
        return expanded
    indices = json.loads(text).get("cells", [])
    return restricted(expanded, [expanded.cells[i] for i in indices if 0 <= i < len(expanded.cells)])
