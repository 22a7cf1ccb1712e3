"""No import cycle among the project's modules (edge_mm, runtime, export, calib).

Every `import` statement counts, also those inside functions: a lazy import hides a cycle from
the interpreter, not from the reader (edge_mm.train.cdinet and edge_mm.evaluate.cdinet once
imported each other that way). The graph is read from the source files with `ast`, so nothing is
imported and a new module is checked without editing this file.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

from support import ROOT

PACKAGES = ("edge_mm", "runtime", "export", "calib")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> Dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _imports(name: str, path: Path, known: Set[str]) -> Set[str]:
    """The project modules `name` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    found: Set[str] = set()

    def add(target: str) -> None:
        # the deepest known module named by `target` (a.b.c -> a.b.c, or a.b when c is a name in a.b)
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                add(f"{module}.{alias.name}")
    return found


def import_graph() -> Dict[str, Set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle_hidden_in_a_function():
    graph = {"a.train": {"a.evaluate"}, "a.evaluate": {"a.common"}, "a.common": set(), "a.x": {"a.x"}}
    assert cycles(graph) == []
    graph["a.common"] = {"a.train"}  # a lazy import back up: a three-module cycle
    assert cycles(graph) == [["a.common", "a.evaluate", "a.train"]]


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "edge_mm.evaluate.cdinet" in graph["edge_mm.train.cdinet"]  # training validates with evaluation
    assert "edge_mm.cdinet.weights" in graph["edge_mm.cdinet.checkpoint"]  # imported inside a function
    assert "runtime.sources.base" in graph["runtime.sources.folder"]  # `from .base import ...`


def test_no_import_cycle_in_the_project():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_evaluation_and_model_packages_never_import_training():
    graph = import_graph()
    lower = [
        m for m in graph if m.startswith(("edge_mm.evaluate", "edge_mm.cdinet", "edge_mm.clip", "edge_mm.checkpoint"))
    ]
    upward = {m: sorted(t for t in graph[m] if t.startswith("edge_mm.train")) for m in lower}
    assert not {m: t for m, t in upward.items() if t}, upward
