"""The layering rules, read from the source: who may import whom, and no import cycles.

- ``rkfarm_proto`` (the contracts) imports neither side; ``rkfarm_agent`` never imports ``rkfarm``;
- of the agent, the host imports only its runtime (backends, input conversion, timing), and only from
  ``rkfarm.runtime``, the simulator's package; the remote client, like everything else, uses ``rkfarm_proto``;
- the first-party import graph has no cycle, between modules or between packages, counting the imports made
  inside functions and the type-only ones too: a function-level import may defer a heavy library, never hide
  a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"rkfarm": ROOT / "host", "rkfarm_agent": ROOT / "agent", "rkfarm_proto": ROOT / "proto"}
AGENT_RUNTIME = ("rkfarm_agent.backends", "rkfarm_agent.inputs", "rkfarm_agent.perf", "rkfarm_agent.errors")
HOST_RUNTIME = "rkfarm.runtime"


@cache
def modules() -> dict[str, Path]:
    """Dotted name -> file of every first-party module (generated protobuf modules left out)."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in (folder / package).rglob("*.py"):
            if path.stem.endswith(("_pb2", "_pb2_grpc")):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    hidden: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden.update(id(sub) for sub in ast.walk(node))
    return hidden


def imports_of(name: str, with_type_only: bool = False) -> Iterator[tuple[str, int]]:
    """(first-party module imported, line) of one module, at any depth; ``if TYPE_CHECKING`` blocks only with
    ``with_type_only`` (a type-only import is no dependency at run time, but a circle through one is still a knot).
    ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    tree = ast.parse(modules()[name].read_text(encoding="utf-8"))
    hidden = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in hidden and not with_type_only:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield (sub if sub in modules() else node.module), node.lineno


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_contracts_import_neither_side() -> None:
    bad = [
        f"{m}:{line} imports {target}"
        for m in modules()
        if _within(m, "rkfarm_proto")
        for target, line in imports_of(m)
        if not _within(target, "rkfarm_proto")
    ]
    assert not bad, bad


def test_the_agent_never_imports_the_host() -> None:
    bad = [
        f"{m}:{line} imports {target}"
        for m in modules()
        if _within(m, "rkfarm_agent")
        for target, line in imports_of(m)
        if _within(target, "rkfarm")
    ]
    assert not bad, bad


def test_the_host_reaches_only_the_agents_runtime_and_only_through_rkfarm_runtime() -> None:
    bad = []
    for m in modules():
        if not _within(m, "rkfarm"):
            continue
        for target, line in imports_of(m):
            if not _within(target, "rkfarm_agent"):
                continue
            if not _within(m, HOST_RUNTIME):
                bad.append(f"{m}:{line} imports {target} (only {HOST_RUNTIME} may)")
            elif not any(_within(target, allowed) for allowed in AGENT_RUNTIME):
                bad.append(f"{m}:{line} imports {target}, which is not the agent's runtime")
    assert not bad, bad


def _graph(collapse: bool) -> dict[str, dict[str, int]]:
    """Module (or, with ``collapse``, package) -> imported ones, with a line; imports of an enclosing package
    (Python runs it first anyway) are left out."""

    def node(name: str) -> str:
        if not collapse or modules()[name].name == "__init__.py":
            return name
        parent = name.rsplit(".", 1)[0]
        return parent if "." in parent else name  # top-level modules of a package stand for themselves

    edges: dict[str, dict[str, int]] = {}
    for m in modules():
        for target, line in imports_of(m, with_type_only=True):
            a, b = node(m), node(target)
            if target in modules() and a != b and not _within(a, b) and not _within(b, a):
                edges.setdefault(a, {}).setdefault(b, line)
    return edges


def _cycles(edges: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in list(edges):
        if v not in index:
            visit(v)
    return found


@pytest.mark.parametrize("level", ["modules", "packages"])
def test_the_import_graph_is_acyclic(level: str) -> None:
    edges = _graph(collapse=level == "packages")
    described = [
        [f"{a} -> {b} (line {edges[a][b]})" for a in cycle for b in edges.get(a, {}) if b in cycle]
        for cycle in _cycles(edges)
    ]
    assert not described, described


def test_the_checker_sees_imports_inside_functions() -> None:
    """The graph is read at every depth: a deferred import of the agent's runtime in the simulator counts."""
    assert any(t.startswith("rkfarm_agent.") for t, _ in imports_of("rkfarm.runtime.simulator"))
    assert _cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [["a", "b", "c"]]
