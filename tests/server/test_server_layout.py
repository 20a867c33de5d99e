"""The server package's shape: every module imports, the import graph has no cycle, requests flow one
way (services -> tasks, never back), and every unary pipeline RPC is the one shared path with one
adapter per task."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

import pipelined_server
import pytest
from import_graph import ImportGraph
from pipelined_server.app import SERVICES
from pipelined_server.services.calls import CallInfo
from pipelined_server.services.models import ModelsServicer
from pipelined_server.tasks.adapter import Adapter

PACKAGE = "pipelined_server"
IMPORTS = ImportGraph(Path(pipelined_server.__file__).parent, PACKAGE)


def test_every_module_imports() -> None:
    names = {m.name for m in pkgutil.walk_packages(pipelined_server.__path__, f"{PACKAGE}.")}
    assert names == set(IMPORTS.modules) - {PACKAGE}
    for name in sorted(IMPORTS.modules):
        importlib.import_module(name)


def test_the_import_graph_has_no_cycle() -> None:
    cycle = IMPORTS.cycle()
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("lower", ["tasks", "streaming", "batching", "registry", "config", "audio", "images"])
def test_lower_layers_never_import_the_servicers(lower: str) -> None:
    for name, imported in IMPORTS.edges.items():
        if name == f"{PACKAGE}.{lower}" or name.startswith(f"{PACKAGE}.{lower}."):
            upper = {m for m in imported if m.split(".")[1] in ("services", "app", "cli")}
            assert not upper, f"{name} imports {upper}"


def test_the_graph_sees_function_level_imports() -> None:
    """The graph builder itself: config imports the embedded sources inside a validator."""
    assert f"{PACKAGE}.sources.embedded" in IMPORTS.edges[f"{PACKAGE}.config"]


class _Recorder:
    """Stands in for a servicer's `self`: records the adapter its unary path is given, and owns nothing
    else, so a method that does its own work (reads the state, decodes, submits) fails here."""

    def __init__(self) -> None:
        self.adapters: list[Adapter[Any, Any]] = []

    async def unary(self, adapter: Adapter[Any, Any], request: Any, context: Any, call: CallInfo) -> None:
        self.adapters.append(adapter)


async def test_every_unary_rpc_is_the_shared_path_with_one_adapter_per_task() -> None:
    by_task: dict[str, Adapter[Any, Any]] = {}
    rpcs = 0
    for servicer, pb2, _ in SERVICES:
        if servicer is ModelsServicer:
            continue  # answers from the registry; runs no pipeline
        (service,) = pb2.DESCRIPTOR.services_by_name.values()
        for method in service.methods:
            if method.client_streaming or method.server_streaming:
                continue
            recorder = _Recorder()
            handler = getattr(servicer, method.name).__wrapped__
            await handler(recorder, getattr(pb2, method.input_type.name)(), None, CallInfo(method.name, ""))
            (adapter,) = recorder.adapters
            assert isinstance(adapter, Adapter), method.full_name
            assert by_task.setdefault(adapter.task, adapter) is adapter, f"two adapters for {adapter.task}"
            rpcs += 1
    assert rpcs == len(by_task) >= 18
