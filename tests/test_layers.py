"""The package's layering, read from its own imports (TYPE_CHECKING ones included): no
import circle between modules, and no import from a lower layer to a higher one.

Layers, bottom up (docs/ARCHITECTURE.md): `errors`, `objects` -> `values` -> `config` -> `s3/`
-> `write/` -> `fs/` and `run/` (side by side, neither imports the other) -> `mount` -> `cli`
-> `launch`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "s3mpfs"

# The floor of each layer; a module may import only from its own floor or lower ones
# (and, within a sub-package, its siblings). `fs` and `run` share a floor but may not
# import each other.
FLOORS = {
    "s3mpfs.errors": 0, "s3mpfs.objects": 0, "s3mpfs": 0, "s3mpfs.argv": 0,
    "s3mpfs.values": 0.5,  # parsers of option values: errors below, config above
    "s3mpfs.config": 1,
    "s3mpfs.s3": 2,
    "s3mpfs.write": 3,
    "s3mpfs.fs": 4, "s3mpfs.run": 4,
    "s3mpfs.mount": 5,
    "s3mpfs.cli": 6, "s3mpfs.manual": 6, "s3mpfs.launch": 7, "s3mpfs.__main__": 8,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """`s3mpfs.write.upload` -> `s3mpfs.write`; top-level modules are their own layer."""
    parts = module.split(".")
    return ".".join(parts[:2])


def imports_of(path: Path) -> set[str]:
    """The s3mpfs modules `path` imports, resolved to module names (a `from . import x`
    of a submodule counts as importing that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("s3mpfs"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("s3mpfs"):
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if module_exists(sub) else target)
    return found


def module_exists(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) - {module_name(p)} for p in PACKAGE.rglob("*.py")}


def test_every_layer_has_a_floor() -> None:
    for module in graph():
        assert layer_of(module) in FLOORS, f"{module}: add its layer to FLOORS and ARCHITECTURE"


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    upward = []
    for module, targets in edges.items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if there == here or target == "s3mpfs":
                continue
            if FLOORS[there] >= FLOORS[here]:
                upward.append(f"{module} imports {target}")
    return sorted(upward)


def test_imports_only_go_down() -> None:
    upward = upward_imports(graph())
    assert not upward, "imports that do not go down a layer:\n" + "\n".join(upward)


def test_no_import_circle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(edges.get(module, ())):
            if state.get(target) == 1:
                circle = path[path.index(target):] + [target]
                pytest.fail("import circle: " + " -> ".join(circle))
            if state.get(target) is None:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module)


def test_the_reader_resolves_relative_imports() -> None:
    mount = imports_of(PACKAGE / "mount.py")
    assert {"s3mpfs.run.control", "s3mpfs.fs.namespace", "s3mpfs.errors"} <= mount
    assert "s3mpfs.objects" in imports_of(PACKAGE / "s3" / "store.py")


def test_the_check_sees_sideways_and_upward_imports() -> None:
    edges = {"s3mpfs.fs.names": {"s3mpfs.run.control"}, "s3mpfs.s3.store": {"s3mpfs.write.upload"},
             "s3mpfs.write.upload": {"s3mpfs.s3.store", "s3mpfs.write.parts"}}
    assert upward_imports(edges) == ["s3mpfs.fs.names imports s3mpfs.run.control",
                                     "s3mpfs.s3.store imports s3mpfs.write.upload"]
