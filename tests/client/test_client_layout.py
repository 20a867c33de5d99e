"""The client package's shape: every module imports, the import graph (module-level and function-level
imports, TYPE_CHECKING blocks included) has no cycle, and the transport is a leaf."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pipelined

ROOT = Path(pipelined.__file__).parent
PACKAGE = "pipelined"
TRANSPORT = f"{PACKAGE}._transport"


def _modules() -> dict[str, Path]:
    """Every module of the package (v1, the generated stubs, excluded), by dotted name."""
    modules: dict[str, Path] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[0] == "v1":
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join((PACKAGE, *parts))] = path
    return modules


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _target(name: str) -> str | None:
    """The package module an imported name lands in (None outside the package or in v1)."""
    if name != PACKAGE and not name.startswith(PACKAGE + "."):
        return None
    if name == f"{PACKAGE}.v1" or name.startswith(f"{PACKAGE}.v1."):
        return f"{PACKAGE}.v1"
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _imports(name: str) -> set[str]:
    """The package modules `name` imports anywhere in its source."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    here = name if _is_package(name) else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(t for alias in node.names if (t := _target(alias.name)))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            for alias in node.names:
                # `from X import y`: y is a module of X, or a name defined in X.
                target = _target(f"{module}.{alias.name}")
                if target != f"{module}.{alias.name}" and not (target or "").startswith(f"{PACKAGE}.v1"):
                    target = _target(module)
                if target:
                    found.add(target)
    found.discard(name)
    return found


GRAPH = {name: _imports(name) for name in MODULES}


def test_every_module_imports() -> None:
    names = {m.name for m in pkgutil.walk_packages(pipelined.__path__, f"{PACKAGE}.")}
    names = {n for n in names if not n.startswith(f"{PACKAGE}.v1")}
    assert names == set(MODULES) - {PACKAGE}
    for name in sorted(MODULES):
        importlib.import_module(name)


def test_the_import_graph_has_no_cycle() -> None:
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        if name in done or name not in GRAPH:
            return
        path.append(name)
        for target in sorted(GRAPH[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(GRAPH):
        visit(name)


def test_the_transport_is_a_leaf() -> None:
    assert GRAPH[TRANSPORT] <= {f"{PACKAGE}.errors", f"{PACKAGE}.v1"}
    assert f"{PACKAGE}.v1" in GRAPH[TRANSPORT]


def test_the_pipelines_call_through_the_transport() -> None:
    """Only the transport (and errors) touch gRPC errors: no module outside them catches RpcError."""
    for name, path in MODULES.items():
        if name in (TRANSPORT, f"{PACKAGE}.errors"):
            continue
        assert "from_rpc_error" not in path.read_text(), name


def test_the_graph_sees_function_level_imports() -> None:
    """The graph builder itself: an import inside a function counts."""
    assert f"{PACKAGE}.streaming" in GRAPH[f"{PACKAGE}.cli"]  # cli imports streaming inside main()
