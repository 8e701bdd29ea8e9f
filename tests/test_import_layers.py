"""The top-level packages import each other in one direction only (no cycles), read from the
source with `ast` (so imports inside functions count too): fdm_common at the bottom, imported by
everything; kernels and sampling_schemes need only fdm_common; cli at the top."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("fdm_common", "kernels", "sampling_schemes", "fdm_engine", "trainers", "cli")


def imported_modules(tree: ast.AST) -> set[str]:
    """Absolute module names named by the import statements anywhere in `tree`."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def package_graph(root: Path = ROOT) -> nx.DiGraph:
    """Edge a -> b when a module of package a imports package b; each edge lists its sites."""
    graph = nx.DiGraph()
    graph.add_nodes_from(PACKAGES)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for module in imported_modules(ast.parse(path.read_text(), str(path))):
                target = module.split(".")[0]
                if target in PACKAGES and target != package:
                    graph.add_edge(package, target)
                    graph.edges[package, target].setdefault("sites", []).append(f"{path.relative_to(root)}: {module}")
    return graph


def test_no_import_cycles_between_top_level_packages():
    graph = package_graph()
    cycles = list(nx.simple_cycles(graph))
    detail = "; ".join(
        " -> ".join(c + c[:1]) + " (" + ", ".join(graph.edges[a, b]["sites"][0] for a, b in zip(c, c[1:] + c[:1])) + ")"
        for c in cycles
    )
    assert not cycles, f"import cycles between packages: {detail}"


def test_the_layers_are_as_documented():
    graph = package_graph()
    assert set(graph.successors("fdm_common")) == set(), "fdm_common imports no other fdm package"
    assert set(graph.successors("kernels")) <= {"fdm_common"}
    assert set(graph.successors("sampling_schemes")) <= {"fdm_common"}
    assert set(graph.predecessors("cli")) == set(), "nothing imports the command line"


def test_the_checker_sees_a_cycle(tmp_path):
    """The graph builder finds imports at any depth, including inside functions."""
    for package, body in {"fdm_common": "import kernels.x\n", "kernels": "def f():\n    from fdm_common.y import z\n"}.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "m.py").write_text(body)
    for package in set(PACKAGES) - {"fdm_common", "kernels"}:
        (tmp_path / package).mkdir()
    assert list(nx.simple_cycles(package_graph(tmp_path))) != []
