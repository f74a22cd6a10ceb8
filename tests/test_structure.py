"""The package's structure: no import circle between actpat's modules, counting the imports made
inside functions too (a circle through a lazy import still ties two modules into one)."""

from __future__ import annotations

import ast
import graphlib

from conftest import ROOT


def _imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "actpat":
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("actpat."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("actpat.")}
    return found


def test_no_import_circle():
    package = ROOT / "workflow/actpat"
    modules = {p.stem: p for p in package.glob("*.py")}
    graph = {name: (_imports(path) & modules.keys()) - {name} for name, path in modules.items()}
    assert sum(map(len, graph.values())) > 50  # the graph was read
    try:
        list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import circle: {' -> '.join(exc.args[1])}") from None
