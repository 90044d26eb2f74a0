"""Imports inside the package run one way, along the flow of the data: a module may
import its own layer's modules (without a cycle) and lower layers, never higher ones."""

from __future__ import annotations

import ast
from pathlib import Path

import ridematch_nb

PACKAGE = Path(ridematch_nb.__file__).parent

# Lowest first; the README's Architecture section lists the same order.
LAYERS: list[set[str]] = [
    {"__init__", "config", "events", "geo", "runs"},
    {"columnar"},
    {"kafka_io", "storage", "redis_io"},
    {"sim"},
    {"generate"},
    {"chunking", "etl_writer", "etl"},
    {"offline", "asof_store", "features", "online"},
    {"training"},
    {"matching", "dispatch"},
    {"watch", "explore", "plots", "pipeline"},
    {"services", "stack", "lab"},
    {
        "bench_harness",
        "bench_events",
        "bench_online",
        "bench",
        "bench_offline",
        "bench_dispatch",
        "cli",
        "__main__",
    },
    {"live"},
    {"dashboard"},
]
LAYER = {module: i for i, layer in enumerate(LAYERS) for module in layer}


def imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Package modules a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ridematch_nb":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("ridematch_nb."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("ridematch_nb.")]
            found |= {name.split(".")[1] for name in names}
    return {m for m in found if (package / f"{m}.py").exists()}


def graph(package: Path) -> dict[str, set[str]]:
    return {p.stem: imports(p, package) - {p.stem} for p in sorted(package.glob("*.py"))}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path that does."""

    def back_to(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges[path[-1]]):
            if nxt == start:
                return [*path, start]
            if nxt not in path and (found := back_to(start, [*path, nxt])):
                return found
        return None

    return [c for m in edges if (c := back_to(m, [m]))]


GRAPH = graph(PACKAGE)


def test_every_module_has_a_layer():
    assert set(GRAPH) - set(LAYER) == set()


def test_no_module_imports_a_higher_layer():
    upward = [
        f"{a} (layer {LAYER[a]}) imports {b} (layer {LAYER[b]})"
        for a, deps in GRAPH.items()
        for b in deps
        if LAYER[b] > LAYER[a]
    ]
    assert upward == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_the_checks_see_imports_inside_functions_and_cycles(tmp_path):
    (tmp_path / "a.py").write_text("from ridematch_nb import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from ridematch_nb.a import x\n")
    (tmp_path / "c.py").write_text("import ridematch_nb.a\n")
    edges = graph(tmp_path)
    assert edges == {"a": {"b"}, "b": {"a"}, "c": {"a"}}
    assert cycles(edges) == [["a", "b", "a"], ["b", "a", "b"]]
