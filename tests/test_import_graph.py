"""The package's import graph: imports point down the layers of docs/architecture.md, and no
import cycle exists (``scripts/import_graph.py``)."""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"


@pytest.fixture(scope="module")
def graph():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_package(root: Path, files: dict[str, str]) -> Path:
    src = root / "napari_cytosyn"
    for name, text in files.items():
        path = src / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return src


def test_edges_record_where_each_import_runs(graph, tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "models/__init__.py": "",
            "models/protocol.py": "X = 1\n",
            "sampling/__init__.py": """
                import importlib
                _LAZY = {"run": ".lazy"}
                def __getattr__(name):
                    return getattr(importlib.import_module(_LAZY[name], __name__), name)
            """,
            "sampling/lazy.py": """
                from typing import TYPE_CHECKING
                from ..models.protocol import X
                if TYPE_CHECKING:
                    from napari_cytosyn.slide import real
                def run():
                    from napari_cytosyn import slide
            """,
            "slide/__init__.py": "",
            "slide/real.py": "from napari_cytosyn.sampling import lazy\n",
        },
    )
    edges = graph.import_edges(src)
    kinds = {
        (graph.short(a), graph.short(b)): {w.split(":")[0] for w in where}
        for (a, b), where in edges.items()
    }
    assert kinds[("sampling.lazy", "models.protocol")] == {"module"}
    assert kinds[("sampling.lazy", "slide.real")] == {"typing"}
    assert kinds[("sampling.lazy", "slide")] == {"function"}
    assert kinds[("sampling", "sampling.lazy")] == {"dynamic"}
    assert kinds[("slide.real", "sampling.lazy")] == {"module"}


def test_cycles_are_found_through_function_imports_only_when_asked(graph, tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "cli.py": "def main():\n    from napari_cytosyn import demo\n",
            "demo.py": "from napari_cytosyn import cli\n",
            "export.py": "",
        },
    )
    edges = graph.import_edges(src)
    assert graph.cycles(edges, ("module",)) == []
    assert graph.cycles(edges) == [frozenset({"cli", "demo"})]


def test_an_import_up_the_layers_is_reported(graph, tmp_path):
    src = write_package(
        tmp_path,
        {
            "__init__.py": "",
            "sampling/__init__.py": "",
            "sampling/region.py": "def f():\n    from napari_cytosyn.slide import store\n",
            "slide/__init__.py": "",
            "slide/store.py": "from napari_cytosyn.sampling import region\n",
        },
    )
    upward = graph.upward_imports(graph.import_edges(src))
    assert upward == ["sampling.region -> slide.store [function:2]"]


def test_the_package_imports_point_down_the_layers(graph):
    assert graph.upward_imports(graph.import_edges()) == []


def test_the_package_has_no_import_cycle_at_import_time(graph):
    assert graph.cycles(graph.import_edges(), ("module",)) == []


def test_the_package_has_no_import_cycle_even_through_function_imports(graph):
    assert graph.KNOWN_CYCLES == []
    assert graph.cycles(graph.import_edges()) == []
