"""The floor plan (docs/architecture.md): every module of ``src/voxguard`` sits in a layer, imports only
from its own block or from layers below, and no chain of imports comes back to where it started.

Imports are read with ``ast``, so those inside functions and under ``TYPE_CHECKING`` count as well: a
function-level import that only dodges a circle is still a circle here. Lazy imports (torch stays out
of ``voxguard --help``) are fine as long as they go down.

``python tests/test_layout.py [SRC]`` prints what is wrong with another tree (``SRC`` holds ``voxguard/``).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# Lowest first. A layer holds blocks side by side; a module may import from its own block and from any
# layer below, never from a block beside it or a layer above. An entry names a module or a package
# (with all its modules); the package root ``voxguard`` (its ``__version__``) names only itself.
LAYERS: list[list[tuple[str, ...]]] = [
    # what everything may use: no voxguard imports at all
    [
        ("voxguard",),
        ("voxguard.setup_errors",),
        ("voxguard.address",),
        ("voxguard.progress",),
        ("voxguard.process_tuning",),
    ],
    # audio in, models, labelled data on disk
    [("voxguard.audio",), ("voxguard.model",), ("voxguard.datasets",)],
    # windows -> scores -> verdicts
    [("voxguard.scoring", "voxguard.edges"), ("voxguard.inference", "voxguard.scorer")],
    # VOXGUARD_*: builds the option objects of the layers below, which never see Settings
    [("voxguard.settings",)],
    # bytes -> verdict, the one path serving, eval and bench share
    [("voxguard.pipeline",)],
    # serving without HTTP | offline work | benchmarks: side by side, none imports another
    [
        ("voxguard.serving",),
        ("voxguard.evaluation", "voxguard.training", "voxguard.corpus"),
        ("voxguard.benchmarks",),
    ],
    # HTTP: the app, and the client of its wire format
    [("voxguard.api", "voxguard.client")],
    # processes: uvicorn, the supervisor, voxguard serve
    [("voxguard.processes",)],
    # the command line, and `python -m voxguard`
    [("voxguard.cli", "voxguard.__main__")],
]


def modules(src: Path) -> dict[str, Path]:
    """Every module under ``src/voxguard`` by dotted name (a package by its ``__init__``)."""
    found = {}
    for path in sorted((src / "voxguard").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The voxguard modules ``name`` imports anywhere in its file (``from p import m``: ``p.m`` when
    that is a module, else ``p``)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return {target for target in found if target.split(".")[0] == "voxguard" and target != name}


def graph(src: Path) -> dict[str, set[str]]:
    known = modules(src)
    return {name: imports(name, path, known) for name, path in known.items()}


def place(name: str) -> tuple[int, int] | None:
    """(layer, block) of a module, by the longest entry that names it or a package holding it."""
    best: tuple[int, int, int] | None = None
    for layer, blocks in enumerate(LAYERS):
        for block, entries in enumerate(blocks):
            for entry in entries:
                holds = name == entry or (entry != "voxguard" and name.startswith(entry + "."))
                if holds and (best is None or len(entry) > best[2]):
                    best = (layer, block, len(entry))
    return None if best is None else best[:2]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The modules of each circle of imports (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
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

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _closed_path(component: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself (breadth-first)."""
    start, members = component[0], set(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for nxt in sorted(edges[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(came_from[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, node, start]
                if nxt not in came_from:
                    came_from[nxt] = node
                    following.append(nxt)
        frontier = following
    return component


def problems(src: Path) -> dict[str, list[str]]:
    edges = graph(src)
    unplaced = [name for name in sorted(edges) if place(name) is None]
    unknown = [
        f"{a} imports {b}, which does not exist"
        for a in sorted(edges)
        for b in sorted(edges[a] - edges.keys())
    ]
    wrong = []
    for a in sorted(edges):
        here = place(a)
        for b in sorted(edges[a] & edges.keys()):
            there = place(b)
            if here is None or there is None:
                continue
            if there[0] > here[0]:
                wrong.append(f"{a} (layer {here[0]}) imports {b} from layer {there[0]} above it")
            elif there[0] == here[0] and there[1] != here[1]:
                wrong.append(f"{a} imports {b}, which stands beside it in layer {here[0]}")
    inside = {a: edges[a] & edges.keys() for a in edges}
    circles = [
        f"{', '.join(group)} (one way round: {' -> '.join(_closed_path(group, inside))})"
        for group in cycles(inside)
    ]
    return {"circles": circles, "upward or sideways": wrong, "in no layer": unplaced, "missing": unknown}


def test_no_module_imports_itself_in_a_circle():
    assert not problems(SRC)["circles"]


def test_every_import_goes_down_the_layers():
    found = problems(SRC)
    assert not found["upward or sideways"]
    assert not found["missing"]


def test_every_module_has_a_layer():
    assert not problems(SRC)["in no layer"]


def test_the_checks_see_imports_inside_functions_and_circles(tmp_path):
    """The graph reads a function-level import and a relative one, and the circle finder names the path."""
    package = tmp_path / "voxguard"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text("def rule():\n    from .scoring import Rule\n")
    (package / "scoring.py").write_text("from voxguard import settings\n")
    found = problems(tmp_path)
    way_round = "voxguard.scoring -> voxguard.settings -> voxguard.scoring"
    assert found["circles"] == [f"voxguard.scoring, voxguard.settings (one way round: {way_round})"]
    assert found["upward or sideways"] == [
        "voxguard.scoring (layer 2) imports voxguard.settings from layer 3 above it"
    ]


if __name__ == "__main__":
    found = problems(Path(sys.argv[1]) if len(sys.argv) > 1 else SRC)
    for kind, lines in found.items():
        print(f"{kind}: {len(lines)}")
        for line in lines:
            print(f"  {line}")
    sys.exit(1 if any(found.values()) else 0)
