"""One trial key, two spellings: ``objective: {beta: ...}`` and ``objective.beta: ...`` name the same
key. A sweep file may use either (``search.grid``, ``search.cells``, ``trial``, ``--set``), so a key
can be given twice; taking one of the two by the order of the file would drop the other without a
word. :func:`flatten_once` flattens a mapping to dotted keys and refuses, in one line naming both
spellings, a key given twice with values that cannot both hold (two different values, or a block
and a key inside it). The same value given twice is accepted: both hold.

No Ray, no pydantic: the sweep schema (:mod:`raysweep.tune.sweep_config`) and the loader
(:mod:`raysweep.tune.load`) both use it.
"""

from __future__ import annotations

from typing import Any

from raysweep.errors import RaysweepError


def spelling(parts: list[str]) -> str:
    """How a key was written, from the keys on its path: ``objective.beta`` (one dotted key) or
    ``objective: {beta}`` (nested)."""
    if len(parts) == 1:
        return parts[0]
    return parts[0] + "".join(": {" + p for p in parts[1:]) + "}" * (len(parts) - 1)


def flatten_once(tree: dict[str, Any], where: str) -> dict[str, Any]:
    """`tree` (nested and/or dotted keys) as dotted keys; lists, scalars and empty mappings are leaves.

    Raises:
        RaysweepError: a key given twice in two spellings with different values, or a block given
            beside a key inside it; the message starts with `where` and names both spellings.
    """
    out: dict[str, Any] = {}
    written: dict[str, str] = {}

    def walk(node: dict[str, Any], parts: list[str], prefix: str) -> None:
        for key, value in node.items():
            dotted, path = f"{prefix}{key}", [*parts, str(key)]
            if isinstance(value, dict) and value:
                walk(value, path, dotted + ".")
                continue
            if dotted in out and out[dotted] != value:
                raise RaysweepError(
                    f"{where}: {dotted} is given twice, as {written[dotted]} ({out[dotted]!r}) and as "
                    f"{spelling(path)} ({value!r}): give it once")
            out.setdefault(dotted, value)
            written.setdefault(dotted, spelling(path))

    walk(tree, [], "")
    for key in out:
        inner = next((k for k in out if k.startswith(key + ".")), None)
        if inner is not None:
            raise RaysweepError(
                f"{where}: {written[key]} sets the block {key} and {written[inner]} sets {inner} inside it: "
                "give the keys inside the block, or the block alone")
    return out


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
