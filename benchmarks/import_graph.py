"""The import graph of the ``actpat`` package of a checkout: modules, import arrows between them
(module-level and function-level imports counted apart), circles (strongly connected components of
more than one module, module-level imports only, and all imports), and the biggest modules by lines.

  python benchmarks/import_graph.py [checkout ...]   (default: this one)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def graph(package: Path) -> tuple[dict[str, int], dict[tuple[str, str], bool]]:
    """Lines per module, and each arrow (importer, imported) -> whether it is a module-level import."""
    lines, arrows = {}, {}
    names = {p.stem for p in package.glob("*.py")}
    for path in sorted(package.glob("*.py")):
        text = path.read_text()
        lines[path.stem] = text.count("\n")
        tree = ast.parse(text)
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module:
                if node.module == "actpat":
                    targets = [a.name for a in node.names]
                elif node.module.startswith("actpat."):
                    targets = [node.module.split(".")[1]]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1] for a in node.names if a.name.startswith("actpat.")]
            for t in targets:
                if t in names and t != path.stem:
                    key = (path.stem, t)
                    arrows[key] = arrows.get(key, False) or id(node) in top
    return lines, arrows


def circles(nodes, edges) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    out, index, low, stack, on, counter = [], {}, {}, [], set(), [0]
    succ = {n: [b for a, b in edges if a == n] for n in nodes}

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for n in nodes:
        if n not in index:
            visit(n)
    return out


def main() -> None:
    for checkout in [Path(a) for a in sys.argv[1:]] or [Path(__file__).resolve().parent.parent]:
        lines, arrows = graph(checkout / "workflow/actpat")
        top = [k for k, v in arrows.items() if v]
        print(f"{checkout}: {len(lines)} modules, {len(arrows)} import arrows ({len(top)} module-level, "
              f"{len(arrows) - len(top)} only inside functions)")
        print(f"  circles, module-level imports: {circles(lines, top) or 'none'}")
        print(f"  circles, all imports: {circles(lines, list(arrows)) or 'none'}")
        big = sorted(lines.items(), key=lambda kv: -kv[1])[:5]
        print("  biggest modules (lines): " + ", ".join(f"{m} {n}" for m, n in big))


if __name__ == "__main__":
    main()
