"""The floors of the house (README, "Architecture"): an import may go down a floor or stay on
its floor, never up, and no set of modules imports itself round in a circle.

Every ``import`` statement of every module under ``suite/``, ``problems/``, ``backends/`` and
``reports/`` counts, wherever it stands: at the top, inside a function (a lazy import is still a
dependency), or under ``TYPE_CHECKING``. Modules loaded by name (the registries'
``importlib.import_module``) are discovered, not imported, and are not arrows.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("suite", "problems", "backends", "reports")

#: bottom to top: (floor, the module prefixes on it). A module takes the floor of its longest
#: matching prefix.
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    # what plug-ins are written in: Option, the usage errors, the Framework protocol
    ("vocabulary", ("suite.plugin", "suite.options")),
    # problems, and the framework adapters with the run cache they may use
    ("problems and frameworks", ("problems", "suite.frameworks", "suite.run_cache")),
    # strategies, their linear solvers and the peer rows
    ("strategies", ("backends",)),
    ("harness", ("suite",)),
    ("reports", ("reports",)),
    ("command line", ("suite.cli", "suite.__main__")),
]
#: the harness reaches the strategies through their registry and protocol only
STRATEGY_INTERFACE = ("backends", "backends.base")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules ``path`` imports (``from a import b``: ``a.b`` where that is a
    module, else ``a``)."""
    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(known(a.name) for a in node.names
                         if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                node.module.split(".")[0] in PACKAGES:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else known(node.module))
    found.discard(None)
    found.discard(_module_name(path))
    return found  # type: ignore[return-value]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) for name, path in modules.items()}


def floor_of(module: str) -> int:
    best, floor = -1, -1
    for level, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, floor = len(prefix), level
    assert floor >= 0, f"{module} stands on no floor: add it to FLOORS"
    return floor


def climbing(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a floor, as ``a (floor) -> b (floor)``."""
    return [f"{a} ({FLOORS[floor_of(a)][0]}) -> {b} ({FLOORS[floor_of(b)][0]})"
            for a in sorted(graph) for b in sorted(graph[a]) if floor_of(b) > floor_of(a)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_is_read(graph):
    # the reader must see the arrows it judges: a few that exist by design
    assert "suite.plugin.options" in graph["problems.base"]
    assert "problems.base" in graph["backends.base"]
    assert "reports.html" in graph["suite.cli.report"]
    assert len(graph) > 60


def test_no_import_climbs_a_floor(graph):
    assert climbing(graph) == []


def test_no_import_cycle(graph):
    assert cycles(graph) == []


def test_plugins_import_only_the_vocabulary_of_the_suite(graph):
    leaks = [f"{a} -> {b}" for a in sorted(graph) if a.split(".")[0] in ("problems", "backends")
             for b in sorted(graph[a]) if b.split(".")[0] == "suite" and floor_of(b) > 1]
    assert leaks == []


def test_the_harness_imports_no_strategy_module(graph):
    reach = [f"{a} -> {b}" for a in sorted(graph) if floor_of(a) == 3
             for b in sorted(graph[a]) if b.startswith("backends") and b not in STRATEGY_INTERFACE]
    assert reach == []


def test_the_checker_finds_a_planted_climb_and_circle(graph):
    planted = {k: set(v) for k, v in graph.items()}
    planted["problems.gd"].add("suite.measure")  # a problem reaching into the harness
    planted["suite.records"].add("suite.sweep")  # sweep imports records: a circle
    assert "problems.gd (problems and frameworks) -> suite.measure (harness)" in \
        climbing(planted)
    assert any({"suite.records", "suite.sweep"} <= set(c) for c in cycles(planted))


def test_users_problem_files_keep_their_import():
    from suite.options import Option
    from suite.plugin import options

    assert Option is options.Option
