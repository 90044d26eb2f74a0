"""The folder tree is the architecture: each stage is a subpackage, and imports run one
way, along the flow of the data. A module may import modules of its own stage (without
a cycle) and of lower stages, never of higher ones; no module grows past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import ridematch_nb

PACKAGE = Path(ridematch_nb.__file__).parent

# Lowest first; the README's layout and docs/architecture.md list the same order.
# "base" and "entry" are the top-level modules below and above every subpackage.
STAGES = [
    "base",
    "contract",
    "sim",
    "stream",
    "lake",
    "features",
    "model",
    "views",
    "stack",
    "bench",
    "entry",
]
TOP_LEVEL = {
    "__init__": "base",
    "config": "base",
    "geo": "base",
    "runs": "base",
    "process": "base",
    "ports": "base",
    "pipeline": "entry",
    "cli": "entry",
    "__main__": "entry",
}
MAX_LINES = 400


def module_name(path: Path, package: Path) -> str:
    """'sim.world' for package/sim/world.py, 'config' for package/config.py."""
    return ".".join(path.relative_to(package).with_suffix("").parts)


def stage(module: str) -> str:
    return module.split(".")[0] if "." in module else TOP_LEVEL.get(module, "unknown")


def resolve(dotted: str, package: Path) -> str | None:
    """The package module a dotted name (below ridematch_nb) lives in, if any."""
    parts = dotted.split(".")
    while parts:
        if (package.joinpath(*parts).with_suffix(".py")).exists():
            return ".".join(parts)
        if (package.joinpath(*parts) / "__init__.py").exists():
            return ".".join([*parts, "__init__"])
        parts = parts[:-1]
    return None


def imports(path: Path, package: Path = PACKAGE) -> set[str]:
    """Package modules a file imports, at the top or inside a function."""
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ridematch_nb":
                names += [alias.name for alias in node.names]
            elif node.module.startswith("ridematch_nb."):
                below = node.module.removeprefix("ridematch_nb.")
                names += [f"{below}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names += [
                a.name.removeprefix("ridematch_nb.")
                for a in node.names
                if a.name.startswith("ridematch_nb.")
            ]
    return {m for name in names if (m := resolve(name, package))}


def graph(package: Path) -> dict[str, set[str]]:
    modules = {module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    return {m: imports(p, package) - {m} for m, p in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every module that can reach itself, with one path that does."""

    def back_to(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(edges.get(path[-1], ())):
            if nxt == start:
                return [*path, start]
            if nxt not in path and (found := back_to(start, [*path, nxt])):
                return found
        return None

    return [c for m in edges if (c := back_to(m, [m]))]


GRAPH = graph(PACKAGE)


def test_every_module_belongs_to_a_stage():
    assert {m for m in GRAPH if stage(m) not in STAGES} == set()


def test_every_subpackage_is_a_stage_that_says_what_it_holds_and_may_import():
    subpackages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert subpackages == set(STAGES) - {"base", "entry"}
    for name in subpackages:
        doc = ast.get_docstring(ast.parse((PACKAGE / name / "__init__.py").read_text()))
        lines = doc.splitlines()
        assert len(lines) == 2, name
        assert lines[1].startswith("May import"), name


def test_no_module_imports_a_higher_stage():
    rank = {s: i for i, s in enumerate(STAGES)}
    upward = [
        f"{a} ({stage(a)}) imports {b} ({stage(b)})"
        for a, deps in GRAPH.items()
        for b in deps
        if rank[stage(b)] > rank[stage(a)]
    ]
    assert upward == []


def test_no_import_cycle():
    assert cycles(GRAPH) == []


def test_no_module_is_over_the_line_limit():
    long = {
        module_name(p, PACKAGE): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_the_checks_see_imports_inside_functions_subpackages_and_cycles(tmp_path):
    (tmp_path / "a.py").write_text("from ridematch_nb import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from ridematch_nb.a import x\n")
    (tmp_path / "c.py").write_text("import ridematch_nb.a\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "sub" / "d.py").write_text("from ridematch_nb.sub import e\n")
    (tmp_path / "sub" / "e.py").write_text(
        "from ridematch_nb.sub.d import y\nimport ridematch_nb.c\n"
    )
    edges = graph(tmp_path)
    assert edges == {
        "a": {"b"},
        "b": {"a"},
        "c": {"a"},
        "sub.__init__": set(),
        "sub.d": {"sub.e"},
        "sub.e": {"sub.d", "c"},
    }
    assert cycles(edges)[:2] == [["a", "b", "a"], ["b", "a", "b"]]
    assert ["sub.d", "sub.e", "sub.d"] in cycles(edges)
    rank = {s: i for i, s in enumerate(STAGES)}
    assert rank[stage("bench.harness")] > rank[stage("stack.control")] > rank[stage("config")]
