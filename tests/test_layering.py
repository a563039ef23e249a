"""The package layering holds: no module imports a package above its own, and no import circle.

Layers, top to bottom (docs/architecture.md explains each):

    cli
    agents, serving           (training front ends; the HTTP router application)
    envs
    evaluation
    fidelity                  (replays real runs through the emulator)
    controllers, arrow        (instance control policies; Arrow's algorithms)
    metrics, control
    cluster.emulator, cluster.live   (Cluster backends; the emulator hosts a request router)
    routing                   (request routers: they see only the cluster's types)
    cluster                   (cluster.base: the Cluster interface and its types)
    perf
    workload
    config_io

Imports inside a function count the same as module-level ones: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("arrow_rl", "envs", "agents")

LAYERS: list[set[str]] = [
    {"arrow_rl", "cli"},
    {"agents", "serving"},
    {"envs"},
    {"evaluation"},
    {"fidelity"},
    {"controllers", "arrow"},
    {"metrics", "control"},
    {"cluster.emulator", "cluster.live"},
    {"routing"},
    {"cluster"},
    {"perf"},
    {"workload"},
    {"config_io"},
]
RANK = {name: depth for depth, names in enumerate(LAYERS) for name in names}



def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[:len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in mods else module for a in node.names]
        for target in targets:
            while target and target not in mods and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in mods and target != name:
                found.add(target)
    return found


def _layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "arrow_rl":
        return parts[0]
    if len(parts) == 1:
        return "arrow_rl"
    if parts[1] == "cluster" and len(parts) > 2 and parts[2] in ("emulator", "live"):
        return f"cluster.{parts[2]}"
    return parts[1]


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def test_every_package_has_a_layer():
    missing = sorted({_layer(m) for m in _modules()} - set(RANK))
    assert not missing, f"packages without a layer in tests/test_layering.py: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    upward: set[tuple[str, str]] = set()
    for module, targets in _graph().items():
        for target in targets:
            if RANK[_layer(target)] < RANK[_layer(module)]:
                upward.add((module, target))
    assert not upward, "upward imports (a lower layer must not import a higher one): " + ", ".join(
        f"{a} -> {b}" for a, b in sorted(upward))


def test_no_import_circle_between_modules():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:   # Tarjan's strongly connected components
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_no_circle_between_layers():
    edges: defaultdict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            if _layer(module) != _layer(target):
                edges[_layer(module)].add(_layer(target))
    both_ways = sorted({tuple(sorted((a, b))) for a in edges for b in edges[a] if a in edges.get(b, ())})
    assert not both_ways, f"layers that import each other: {both_ways}"
