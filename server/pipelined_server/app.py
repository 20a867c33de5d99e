"""Assembles the gRPC server: servicers, health, reflection, metrics endpoint, and graceful drain."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from pipelined.v1 import (
    audio_tasks_pb2,
    audio_tasks_pb2_grpc,
    generic_pb2,
    generic_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    multimodal_pb2,
    multimodal_pb2_grpc,
    speech_pb2,
    speech_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
    vision_pb2,
    vision_pb2_grpc,
)

from .config import ServerConfig
from .memory_budgets import check_budgets
from .metrics import Metrics
from .registry import Registry
from .services.audio_tasks import AudioServicer
from .services.calls import ServerState
from .services.generic import GenericServicer
from .services.models import ModelsServicer
from .services.multimodal import MultimodalServicer
from .services.speech import SpeechServicer
from .services.text import TextServicer
from .services.vision import VisionServicer

log = logging.getLogger(__name__)

# Every pipelined service, once: (servicer class, messages module, stubs module). The service name, the
# registration function and the reflection entry all come from the module's descriptor.
SERVICES: tuple[tuple[Any, Any, Any], ...] = (
    (SpeechServicer, speech_pb2, speech_pb2_grpc),
    (ModelsServicer, models_pb2, models_pb2_grpc),
    (VisionServicer, vision_pb2, vision_pb2_grpc),
    (MultimodalServicer, multimodal_pb2, multimodal_pb2_grpc),
    (AudioServicer, audio_tasks_pb2, audio_tasks_pb2_grpc),
    (TextServicer, text_pb2, text_pb2_grpc),
    (GenericServicer, generic_pb2, generic_pb2_grpc),
)


def _add(servicer: Any, pb2: Any, pb2_grpc: Any, server: grpc.aio.Server) -> str:
    """Registers a servicer under the one service its proto file defines; returns the full service name."""
    (service,) = pb2.DESCRIPTOR.services_by_name.values()
    getattr(pb2_grpc, f"add_{service.name}Servicer_to_server")(servicer, server)
    return str(service.full_name)


SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class App:
    """A running server. `start()` binds and begins loading models; `drain()` shuts down gracefully."""

    config: ServerConfig
    metrics: Metrics
    server: grpc.aio.Server
    state: ServerState
    health: health.aio.HealthServicer
    port: int = 0
    _load_task: asyncio.Task[None] | None = None
    _health_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def build(cls, config: ServerConfig, metrics: Metrics | None = None) -> App:
        metrics = metrics or Metrics()
        options = [
            ("grpc.max_receive_message_length", config.max_message_bytes),
            ("grpc.max_send_message_length", config.max_message_bytes),
        ]
        server = grpc.aio.server(options=options)
        health_servicer = health.aio.HealthServicer()
        app_holder: list[App] = []

        def on_health(name: str, ok: bool) -> None:
            app_holder[0].schedule_health(name, ok)

        registry = Registry(config, metrics, on_health=on_health)
        state = ServerState(config=config, registry=registry, metrics=metrics)
        services = [_add(servicer(state), pb2, pb2_grpc, server) for servicer, pb2, pb2_grpc in SERVICES]
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        services += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        reflection.enable_server_reflection(services, server)
        app = cls(config=config, metrics=metrics, server=server, state=state, health=health_servicer)
        app_holder.append(app)
        return app

    def schedule_health(self, name: str, ok: bool) -> None:
        task = asyncio.get_running_loop().create_task(self._update_health(name, ok))
        # The loop keeps only weak references to tasks: hold it until it is done.
        self._health_tasks.add(task)
        task.add_done_callback(self._health_tasks.discard)

    async def _update_health(self, name: str, ok: bool) -> None:
        serving = ok and not self.state.draining
        await self.health.set(name, SERVING if serving else NOT_SERVING)
        overall = self.state.registry.serving and not self.state.draining
        await self.health.set("", SERVING if overall else NOT_SERVING)

    async def start(self) -> int:
        """Refuses a config whose models cannot fit their declared memory budgets (ConfigError), then binds
        the port (0 picks a free one), starts serving health at once and loads models behind it."""
        await asyncio.to_thread(check_budgets, self.config.models)
        self.port = self.server.add_insecure_port(f"{self.config.host}:{self.config.port}")
        if self.port == 0:
            raise OSError(f"cannot bind {self.config.host}:{self.config.port}")
        await self.health.set("", NOT_SERVING)
        for name in self.state.registry.instances:
            await self.health.set(name, NOT_SERVING)
        await self.server.start()
        self._load_task = asyncio.get_running_loop().create_task(self.state.registry.load_all())
        log.info("listening on %s:%d", self.config.host, self.port)
        return self.port

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def drain(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls (UNAVAILABLE), let calls in flight finish within the grace, stop."""
        grace = self.config.grace_period_s if grace_s is None else grace_s
        self.state.draining = True
        self.state.drain_started.set()
        await self.health.enter_graceful_shutdown()
        try:
            await asyncio.wait_for(self.state.idle.wait(), grace)
        except TimeoutError:
            log.warning("%d calls still running after %.1f s grace; stopping", self.state.inflight, grace)
        await self.server.stop(0)
        await self.state.registry.close()
