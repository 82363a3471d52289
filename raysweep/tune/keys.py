"""One trial key, two spellings: ``objective: {beta: ...}`` and ``objective.beta: ...`` name the same
key. A sweep file may use either (``search.grid``, ``search.cells``, ``trial``, ``--set``), so a key
can be given twice; taking one of the two by the order of the file would drop the other without a
word. :func:`flatten_once` flattens a mapping to dotted keys and refuses, in one line naming both
spellings, a key given twice with values that cannot both hold (two different values, or a block
and a key inside it). The same value given twice is accepted: both hold.

No Ray: the sweep schema (:mod:`raysweep.tune.sweep_config`) and the loader
(:mod:`raysweep.tune.load`) both use it.
"""

from __future__ import annotations

from typing import Any

from raysweep.config import flatten

__all__ = ["flatten_once", "nest"]


def flatten_once(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """`tree` (nested and/or dotted keys) as dotted keys; lists, scalars and empty mappings are leaves.

    The package's one flattener (:func:`raysweep.config.flatten`) in its refusing form.

    Raises:
        RaysweepError: a key given twice in two spellings with different values, or a block given
            beside a key inside it; the message starts with `where` and names both spellings.
    """
    return flatten(tree, where=where)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys (as :func:`flatten_once` returns them) as one nested mapping."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree
