"""The package's import graph has no circle and no import up a layer, lazy imports included; the
sweep schema loads without Ray.

The layers, top down (``../shared/ARCHITECTURE.md``; each imports only from its own floor or below):
``cli`` > ``frontier`` > ``tune`` > ``tracking`` > ``train`` > ``data``, ``models``, ``losses``,
``control``, ``toy`` > ``config``, ``metrics``, ``names``, ``registry``, ``storage``, ``errors``.

Every module of ``raysweep/`` is parsed with :mod:`ast`; every ``import`` and ``from ... import``
counts, at module level and inside functions, relative ones resolved, ``from pkg import module``
counted as an import of the module. Imports under ``if TYPE_CHECKING:`` are left out (they never
run). A circle is a strongly connected component of more than one module (Tarjan), or a module
importing itself.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "raysweep"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package (``__init__`` as the package)."""
    out = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of `tree`, skipping the bodies of ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import module` imports the module; `from module import name` the module
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                # `import a.b.c` runs a, a.b and a.b.c: the deepest one that is ours is the edge
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target:
                    graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of `graph` (iterative, so deep graphs are fine)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(sorted(component))
    return components


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: components of several modules, and modules importing themselves."""
    return [c for c in strongly_connected(graph) if len(c) > 1 or c[0] in graph[c[0]]]


# top down; a name is the first part of a module's path under raysweep/ (a package or a module)
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("frontier",),
    ("tune",),
    ("tracking",),
    ("train",),
    ("data", "models", "losses", "control", "toy"),
    ("config", "metrics", "names", "registry", "storage", "errors"),
)


def layer_of(module: str) -> int | None:
    """The floor of `module` (0 is the top), None for the package itself (``raysweep/__init__``)."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    for floor, names in enumerate(LAYERS):
        if parts[1] in names:
            return floor
    raise AssertionError(f"{module}: not on any floor of LAYERS; add raysweep.{parts[1]} to the layer it belongs to")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import that runs up a layer, as ``importer (floor) -> imported (floor)``."""
    found = []
    for importer, targets in sorted(graph.items()):
        low = layer_of(importer)
        for target in sorted(targets):
            high = layer_of(target)
            if low is not None and high is not None and high < low:
                found.append(f"{importer} ({'/'.join(LAYERS[low])}) -> {target} ({'/'.join(LAYERS[high])})")
    return found


def test_the_layer_rule_names_each_upward_import_lazy_ones_included(tmp_path: Path) -> None:
    """The shape of today's backward imports before they were moved: tracking reaching into tune
    at module level and lazily, data reaching into tune; downward and same-floor imports pass."""
    root = tmp_path / PACKAGE
    for package in ("tune", "tracking", "data"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "__init__.py").write_text("")
    (root / "storage.py").write_text("from raysweep import errors\n")
    (root / "errors.py").write_text("")
    (root / "tune" / "space.py").write_text("from raysweep.tracking import store\nfrom raysweep import storage\n")
    (root / "tracking" / "store.py").write_text("from raysweep.tune import space\n")
    (root / "tracking" / "sync.py").write_text("def f():\n    from raysweep.tune.space import x\n")
    (root / "data" / "prepare.py").write_text("from ..tune.space import expand\n")
    found = upward_imports(import_graph(module_names(tmp_path)))
    assert found == [
        "raysweep.data.prepare (data/models/losses/control/toy) -> raysweep.tune.space (tune)",
        "raysweep.tracking.store (tracking) -> raysweep.tune.space (tune)",
        "raysweep.tracking.sync (tracking) -> raysweep.tune.space (tune)",
    ]


def test_no_import_runs_up_a_layer() -> None:
    graph = import_graph(module_names())
    found = upward_imports(graph)
    listing = "\n".join(found)
    assert not found, f"imports that run up a layer (lazy imports included):\n{listing}"
    # the rule is not empty: downward edges across every floor exist
    floors = {(layer_of(a), layer_of(b)) for a, ts in graph.items() for b in ts}
    assert {(0, 1), (1, 2), (2, 3), (2, 4), (4, 5), (5, 6)} <= floors, sorted(floors)


def test_the_checker_finds_a_lazy_circle_and_ignores_type_checking(tmp_path: Path) -> None:
    pkg = tmp_path / PACKAGE / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / PACKAGE / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from raysweep.sub import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .d import x\n"
                              "def g():\n    from .a import thing\n")
    (pkg / "d.py").write_text("import raysweep.sub.c\n")
    graph = import_graph(module_names(tmp_path))
    assert graph["raysweep.sub.b"] == {"raysweep.sub.c"} and graph["raysweep.sub.d"] == {"raysweep.sub.c"}
    assert cycles(graph) == [["raysweep.sub.a", "raysweep.sub.b", "raysweep.sub.c"]]


def test_no_import_circle_in_the_package() -> None:
    graph = import_graph(module_names())
    assert len(graph) > 50 and "raysweep.tune.run" in graph["raysweep.cli"]
    found = cycles(graph)
    listing = "\n".join(" -> ".join([*c, c[0]]) for c in found)
    assert not found, f"import circles (lazy imports included):\n{listing}"


@pytest.mark.parametrize("module", ["raysweep.tune.sweep_config", "raysweep.tune.load", "raysweep.tune.check",
                                    "raysweep.storage", "raysweep.tune.matched_rate.points"])
def test_the_sweep_schema_loads_without_ray(module: str) -> None:
    code = f"import sys, {module}; assert 'ray' not in sys.modules, sorted(m for m in sys.modules if 'ray' in m)"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_validate_runs_without_importing_ray(tmp_path: Path) -> None:
    code = ("import sys; from raysweep.cli import main; "
            "status = main(['validate', 'search_spaces/quickstart.yaml']); "
            "assert status == 0; assert 'ray' not in sys.modules, 'validate imported ray'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "sweep quickstart is valid" in done.stdout
