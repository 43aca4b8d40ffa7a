"""Imports run one way: no module of jobs/ or analysis/ reaches itself through its imports,
those inside functions included (a lazy import is still a cycle of ideas)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("jobs", "analysis")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, modules: set[str]) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for package in PACKAGES for path in (REPO / package).rglob("*.py")}
    modules = set(paths)
    # A package's __init__ is imported with any of its modules: leave it out of their edges.
    return {name: project_imports(path, modules) - {name, *name.split(".")[:1]} for name, path in paths.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = "open"
        for neighbour in sorted(graph.get(node, ())):
            if state.get(neighbour) == "open":
                return [*trail[trail.index(neighbour):], neighbour] if neighbour in trail else [node, neighbour]
            if neighbour not in state and (cycle := visit(neighbour, [*trail, neighbour])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_a_cycle_is_found_where_there_is_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_projects_imports_run_one_way():
    graph = import_graph()
    assert "jobs.launch.launcher" in graph and "jobs.train.job" in graph["jobs.launch.launcher"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])
