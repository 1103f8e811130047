"""Import graph of the package: edges between its modules, layer violations and import cycles.

Reads the source with ``ast`` (nothing is imported). An edge ``a -> b`` is recorded with where
the import sits: ``module`` (runs at import time), ``function`` (inside a def: runs on first
use), ``dynamic`` (``importlib.import_module(".name", __name__)`` tables of lazily imported
package attributes) or ``typing`` (under ``if TYPE_CHECKING``, never runs).

    python scripts/import_graph.py            # cycles (strongly connected components) and
                                              # imports that point up the layers
    python scripts/import_graph.py --edges    # every edge
    python scripts/import_graph.py --layers   # edges between top-level packages, counted

Exit status 1 when an import points up the layers or a cycle exists that is not in
``KNOWN_CYCLES``. The layers are those of docs/architecture.md.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterable
from pathlib import Path

PACKAGE = "napari_cytosyn"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE

#: Top-level packages/modules by layer, lowest first; a module may import its own layer and
#: the layers below (docs/architecture.md, "Layers").
LAYERS: list[set[str]] = [
    {"pixel_size", "chunk_grid"},
    {"models"},
    {"sampling"},
    {"slide"},
    {"export"},
    {"distributed"},
    {"testkit"},
    {"_napari", "cli", "cli_masks", "cli_testkit", "cli_twin", "demo", "__main__"},
]

#: Cycles tolerated through imports inside functions (none at import time): none today. An entry
#: would be the set of modules of one strongly connected component.
KNOWN_CYCLES: list[frozenset[str]] = []

Edges = dict[tuple[str, str], set[str]]


def module_names(src: Path = SRC) -> dict[str, Path]:
    """Dotted module name (``napari_cytosyn.slide.real``) -> file, for every ``.py`` under src."""
    names = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _known(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name if name.startswith(PACKAGE) else None


def _targets(
    node: ast.Import | ast.ImportFrom, current: str, is_package: bool, modules: dict[str, Path]
) -> list[str]:
    base = current.split(".") if is_package else current.split(".")[:-1]
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        if node.level:
            prefix = base[: len(base) - (node.level - 1)]
            module = ".".join(prefix + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        names = []
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            names.append(sub if sub in modules else module)
    found = (_known(n, modules) for n in names)
    return [t for t in found if t and t != current]


class _Collector(ast.NodeVisitor):
    def __init__(self, current: str, is_package: bool, modules: dict[str, Path], edges: Edges):
        self.current, self.is_package = current, is_package
        self.modules, self.edges = modules, edges
        self.in_function = 0
        self.in_type_checking = 0

    def visit_FunctionDef(self, node: ast.AST) -> None:
        self.in_function += 1
        self.generic_visit(node)
        self.in_function -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if "TYPE_CHECKING" in ast.unparse(node.test):
            self.in_type_checking += 1
            for child in node.body:
                self.visit(child)
            self.in_type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, node: ast.Import | ast.ImportFrom) -> None:
        kind = "typing" if self.in_type_checking else "function" if self.in_function else "module"
        for target in _targets(node, self.current, self.is_package, self.modules):
            self.edges.setdefault((self.current, target), set()).add(f"{kind}:{node.lineno}")

    visit_Import = visit_ImportFrom = _add


def import_edges(src: Path = SRC) -> Edges:
    """``(importer, imported) -> {"kind:line", ...}`` over the package's own modules."""
    modules = module_names(src)
    edges: Edges = {}
    for name, path in modules.items():
        text = path.read_text()
        tree = ast.parse(text)
        is_package = path.name == "__init__.py"
        _Collector(name, is_package, modules, edges).visit(tree)
        if "import_module" in text:
            # Lazy package attributes: tables of ".submodule" strings resolved on first access.
            base = name if is_package else name.rpartition(".")[0]
            for node in ast.walk(tree):
                value = getattr(node, "value", None)
                if isinstance(node, ast.Constant) and isinstance(value, str):
                    target = base + value if value.startswith(".") and len(value) > 1 else None
                    if target in modules and target != name:
                        edges.setdefault((name, target), set()).add(f"dynamic:{node.lineno}")
    return edges


def short(name: str) -> str:
    """``napari_cytosyn.slide.real`` -> ``slide.real``."""
    return name[len(PACKAGE) + 1 :] if name.startswith(PACKAGE + ".") else ""


def cycles(
    edges: Edges, kinds: Iterable[str] = ("module", "function", "dynamic")
) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (short names), over the edges of
    the given kinds (Tarjan's algorithm, iterative)."""
    kinds = set(kinds)
    graph: dict[str, list[str]] = {}
    for (a, b), where in edges.items():
        if any(w.split(":")[0] in kinds for w in where):
            graph.setdefault(a, []).append(b)
            graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(short(member))
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def layer_of(name: str) -> int | None:
    """Index in :data:`LAYERS` of a module's top-level package; None for the package root and
    packages in no layer (``quality``, new ones), which are not checked."""
    top = short(name).split(".")[0]
    for i, layer in enumerate(LAYERS):
        if top in layer:
            return i
    return None


def upward_imports(edges: Edges) -> list[str]:
    """Imports (any kind but typing) from a module to a higher layer, as readable lines."""
    bad = []
    for (a, b), where in sorted(edges.items()):
        la, lb = layer_of(a), layer_of(b)
        runs = [w for w in where if not w.startswith("typing")]
        if runs and la is not None and lb is not None and lb > la:
            bad.append(f"{short(a)} -> {short(b)} [{', '.join(sorted(runs))}]")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--edges", action="store_true", help="print every edge")
    ap.add_argument("--layers", action="store_true", help="print edges between top-level packages")
    args = ap.parse_args()
    edges = import_edges()
    if args.edges:
        for (a, b), where in sorted(edges.items()):
            print(f"{short(a) or PACKAGE} -> {short(b) or PACKAGE}  [{', '.join(sorted(where))}]")
    if args.layers:
        counts: dict[tuple[str, str], int] = {}
        for a, b in edges:
            ta, tb = short(a).split(".")[0] or PACKAGE, short(b).split(".")[0] or PACKAGE
            if ta != tb:
                counts[ta, tb] = counts.get((ta, tb), 0) + 1
        for (ta, tb), n in sorted(counts.items()):
            print(f"{ta} -> {tb}: {n} edge(s)")
    status = 0
    for title, kinds in (
        ("at import time (module level)", ("module",)),
        ("with imports inside functions and lazy attributes", ("module", "function", "dynamic")),
    ):
        found = cycles(edges, kinds)
        print(f"cycles {title}: {len(found)}")
        for component in found:
            members = sorted(component)
            known = " (known)" if component in KNOWN_CYCLES else ""
            print(f"  {', '.join(members)}{known}")
            for (a, b), where in sorted(edges.items()):
                if short(a) in component and short(b) in component:
                    print(f"    {short(a)} -> {short(b)}  [{', '.join(sorted(where))}]")
            status |= component not in KNOWN_CYCLES
    tops = {short(name).split(".")[0] for name in module_names()} - {""}
    unlayered = sorted(t for t in tops if layer_of(f"{PACKAGE}.{t}") is None)
    print(f"top-level modules in no layer (not checked): {', '.join(unlayered) or 'none'}")
    upward = upward_imports(edges)
    print(f"imports pointing up the layers: {len(upward)}")
    for line in upward:
        print(f"  {line}")
    return int(status or bool(upward))


if __name__ == "__main__":
    sys.exit(main())
