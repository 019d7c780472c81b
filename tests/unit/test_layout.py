"""The package's layout rules, read from the source with the standard library's ``ast``.

docs/development.md draws the layout: one folder per resource type under ``agents/``, found
through the registry; imports point only downward (cli -> daemon/ocf -> framework, agents ->
model -> guest and the small shared modules); no import circles; only ``agents/`` imports a
hypervisor driver. Every import counts, also one inside a function or under TYPE_CHECKING:
each is a dependency the code has.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "kvmguest"
DRIVERS = {"libvirt", "libvirtaio", "ovirtsdk4", "docker"}
# The floors, top down. A module may import from a lower floor and from its own room (the
# first component below kvmguest), never from a higher floor or from another room on its own
# floor. The small shared modules and the test support live on the ground floor.
FLOORS = {
    "__main__": 7,
    "cli": 6,
    "daemon": 5,
    "ocf": 5,
    "framework": 4,
    "agents": 4,
    "model": 3,
    "guest": 2,
    "deadline": 1,
    "errors": 1,
    "secrets": 1,
    "testing": 1,
    "__init__": 0,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of ``path``, resolved to a module of
    ``known`` where it is one of ours, else to the top-level name it imports."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in known else base), node.lineno


def _graph() -> dict[str, list[tuple[str, int]]]:
    mods = _modules()
    known = set(mods)
    return {name: list(_imports(name, path, known)) for name, path in mods.items()}


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _internal(graph: dict[str, list[tuple[str, int]]]) -> dict[str, set[str]]:
    return {m: {t for t, _ in edges if t in graph and t != m} for m, edges in graph.items()}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_graph_is_read() -> None:
    graph = _graph()
    # The reader must see the package: a rule checked over nothing proves nothing.
    assert "kvmguest.agents.registry" in graph and "kvmguest.daemon.engine" in graph
    assert "kvmguest.agents.registry" in {t for t, _ in graph["kvmguest.daemon.engine"]}
    assert "libvirt" in {t for t, _ in graph["kvmguest.agents.kvmguest.libvirt_conn"]}


def test_cycle_finder_finds_a_cycle() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles() -> None:
    assert _cycles(_internal(_graph())) == []


def test_no_type_folder_is_imported_from_outside_agents() -> None:
    agent_folders = {p.name for p in (PKG / "agents").iterdir() if (p / "__init__.py").exists()}
    assert agent_folders, "no agent folder found under agents/"
    bad = []
    for module, edges in _graph().items():
        if module.startswith("kvmguest.agents"):
            continue
        for target, line in edges:
            parts = target.split(".")
            if parts[:2] == ["kvmguest", "agents"] and len(parts) > 2 and parts[2] in agent_folders:
                bad.append(f"{module}:{line} imports {target}")
    assert bad == []


def test_drivers_are_imported_only_under_agents() -> None:
    bad = [
        f"{module}:{line} imports {target}"
        for module, edges in _graph().items()
        for target, line in edges
        if target.split(".")[0] in DRIVERS and not module.startswith("kvmguest.agents.")
    ]
    assert bad == []


@pytest.mark.parametrize("room", sorted(set(FLOORS) - {"__init__"}))
def test_imports_point_down(room: str) -> None:
    graph = _graph()
    rooms = {_room(m) for m in graph}
    assert rooms <= set(FLOORS), f"a room without a floor: {sorted(rooms - set(FLOORS))}"
    bad = []
    for module, edges in graph.items():
        if _room(module) != room:
            continue
        for target, line in edges:
            if target not in graph or _room(target) == room:
                continue
            if FLOORS[_room(target)] >= FLOORS[room]:
                bad.append(f"{module}:{line} imports {target} (floor {FLOORS[_room(target)]})")
    assert bad == []


def test_cli_commands_do_not_import_private_helpers() -> None:
    # Command modules share helpers through cli/app.py; only the entry (cli/lean.py, which
    # hands everything but a plain monitor to the click CLI) imports cli/main.py.
    bad = [
        f"{module}:{line} imports {target}"
        for module, edges in _graph().items()
        if module.startswith("kvmguest.cli.") and module != "kvmguest.cli.lean"
        for target, line in edges
        if target == "kvmguest.cli.main"
    ]
    assert bad == []
