"""The client package's shape: every module imports, the import graph (module-level and function-level
imports, TYPE_CHECKING blocks included) has no cycle, and the transport is a leaf."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pipelined
from import_graph import ImportGraph

ROOT = Path(pipelined.__file__).parent
PACKAGE = "pipelined"
TRANSPORT = f"{PACKAGE}._transport"
IMPORTS = ImportGraph(ROOT, PACKAGE, skip=("v1",))
MODULES = IMPORTS.modules
GRAPH = IMPORTS.edges


def test_every_module_imports() -> None:
    names = {m.name for m in pkgutil.walk_packages(pipelined.__path__, f"{PACKAGE}.")}
    names = {n for n in names if not n.startswith(f"{PACKAGE}.v1")}
    assert names == set(MODULES) - {PACKAGE}
    for name in sorted(MODULES):
        importlib.import_module(name)


def test_the_import_graph_has_no_cycle() -> None:
    cycle = IMPORTS.cycle()
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


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
