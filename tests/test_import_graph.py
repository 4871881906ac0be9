"""The package's import graph: acyclic (module-level and function-level imports alike), function-level imports only
for the optional dependencies listed in ``spikelearn.optional``, and ``config`` importing nothing from the package.

The graph is read from the source (``ast``), so an import hidden in a function counts exactly like one at the top.
"""

from __future__ import annotations

import ast
import pathlib

import networkx as nx

import spikelearn
from spikelearn.optional import OPTIONAL_MODULES

ROOT = pathlib.Path(spikelearn.__file__).resolve().parent


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(mod: str, name: str | None) -> str | None:
    """The package module an import binds: ``from mod import name`` targets ``mod.name`` when that is a module."""
    if name is not None and f"{mod}.{name}" in MODULES:
        return f"{mod}.{name}"
    return mod if mod in MODULES else None


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str, is_pkg: bool):
        self.module, self.is_pkg = module, is_pkg
        self.depth = 0          # > 0 inside a function
        self.type_checking = 0  # > 0 inside ``if TYPE_CHECKING:``
        self.found: list[tuple[str, bool, int]] = []  # (imported top-level or package module, in function, line)

    def _absolute(self, node: ast.ImportFrom) -> str:
        if node.level == 0:
            return node.module or ""
        base = self.module.split(".")
        base = base if self.is_pkg else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join(base + ([node.module] if node.module else []))

    def visit_FunctionDef(self, node):  # noqa: N802
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node):  # noqa: N802
        tc = isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
        self.type_checking += tc
        self.generic_visit(node)
        self.type_checking -= tc

    def visit_Import(self, node):  # noqa: N802
        if not self.type_checking:
            for a in node.names:
                self.found.append((a.name, self.depth > 0, node.lineno))

    def visit_ImportFrom(self, node):  # noqa: N802
        if self.type_checking:
            return
        mod = self._absolute(node)
        if mod == "__future__":
            return
        for a in node.names:
            target = _resolve(mod, a.name) if mod.startswith("spikelearn") else mod
            self.found.append((target or mod, self.depth > 0, node.lineno))


def _imports():
    out = {}
    for name, path in MODULES.items():
        v = _Imports(name, path.name == "__init__.py")
        v.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        out[name] = v.found
    return out


IMPORTS = _imports()


def test_the_import_graph_is_acyclic():
    G = nx.DiGraph()
    G.add_nodes_from(MODULES)
    for mod, found in IMPORTS.items():
        for target, _, _ in found:
            if target.startswith("spikelearn") and target in MODULES and target != mod:
                G.add_edge(mod, target)
    cycles = list(nx.simple_cycles(G))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c + [c[0]]) for c in sorted(cycles)[:20])


def test_function_level_imports_only_for_optional_dependencies():
    bad = [f"{mod}:{line} imports {target}" for mod, found in IMPORTS.items() for target, in_fn, line in found
           if in_fn and target.split(".")[0] not in OPTIONAL_MODULES]
    assert not bad, "function-level imports of non-optional modules:\n" + "\n".join(sorted(bad))


def test_no_module_imports_another_modules_private_names():
    bad = []
    for mod, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("spikelearn")):
                bad += [f"{mod}:{node.lineno} imports {a.name} from {node.module}" for a in node.names
                        if a.name.startswith("_") and not a.name.startswith("__")]
    assert not bad, "\n".join(bad)


def test_config_imports_nothing_from_the_package():
    own = [t for t, _, _ in IMPORTS["spikelearn.config"] if t.startswith("spikelearn")]
    assert not own, own


def test_the_graph_is_read_correctly():
    """The reader sees what it must (so the tests above cannot pass vacuously)."""
    assert "spikelearn.rules.local" in MODULES and "spikelearn.models" in MODULES
    targets = {t for t, _, _ in IMPORTS["spikelearn.rules.eprop"]}
    assert {"spikelearn.rules.local", "spikelearn.models", "torch"} <= targets
    v = _Imports("spikelearn.x", False)
    v.visit(ast.parse("def f():\n    import brian2\n    from spikelearn import models\n"))
    assert v.found == [("brian2", True, 2), ("spikelearn.models", True, 3)]
