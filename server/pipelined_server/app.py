"""Assembles the gRPC server: servicers, health, reflection, metrics endpoint, and graceful drain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
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

from . import logs
from .config import GrpcOptions, ServerConfig
from .memory_budgets import check_budgets
from .metrics import Metrics
from .registry import Registry
from .security import AuthInterceptor, TokenStore, server_credentials
from .services.audio_tasks import AudioServicer
from .services.calls import RPC_TASKS, ServerState
from .services.generic import GenericServicer
from .services.models import ModelsServicer
from .services.multimodal import MultimodalServicer
from .services.speech import SpeechServicer
from .services.text import TextServicer
from .services.vision import VisionServicer
from .streaming import relay
from .workers import binds_early, is_worker, worker_index

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


def server_options(config: ServerConfig) -> list[tuple[str, int]]:
    """gRPC channel arguments of the server: message size, keepalive enforcement, connection age and
    idle limits, concurrent streams per connection (config `grpc:`; defaults in config.GrpcOptions)."""
    g: GrpcOptions = config.grpc

    def ms(seconds: float) -> int:
        return int(seconds * 1000)

    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.keepalive_time_ms", ms(g.keepalive_time_s)),
        ("grpc.keepalive_timeout_ms", ms(g.keepalive_timeout_s)),
        # Enforcement: pings closer than this (with no data in between) are strikes; two strikes, GOAWAY.
        ("grpc.http2.min_ping_interval_without_data_ms", ms(g.min_ping_interval_s)),
        ("grpc.keepalive_permit_without_calls", int(g.permit_keepalive_without_calls)),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_concurrent_streams", g.max_concurrent_streams),
    ]
    if g.max_connection_age_s:
        options.append(("grpc.max_connection_age_ms", ms(g.max_connection_age_s)))
    if g.max_connection_age_grace_s:
        options.append(("grpc.max_connection_age_grace_ms", ms(g.max_connection_age_grace_s)))
    if g.max_connection_idle_s:
        options.append(("grpc.max_connection_idle_ms", ms(g.max_connection_idle_s)))
    return options


def _rejected(details: grpc.HandlerCallDetails, code: grpc.StatusCode, message: str) -> None:
    """Access log line of a call refused before any handler (no token): peer unknown at this stage."""
    logs.access(
        method=details.method.rsplit("/", 1)[-1],
        code=code,
        latency_s=0.0,
        peer="",
        request_id=logs.request_id(details.invocation_metadata),
    )


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
    tokens: TokenStore | None = None
    port: int = 0
    # The plaintext health-only server (`health_port`), when configured.
    health_server: grpc.aio.Server | None = None
    health_port: int = 0
    # Called when a worker that binds once loaded (see `start`) cannot bind: the server then stops.
    on_bind_failure: Callable[[Exception], object] | None = None
    _load_task: asyncio.Task[None] | None = None
    _health_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @classmethod
    def build(
        cls, config: ServerConfig, metrics: Metrics | None = None, siblings: relay.Siblings | None = None
    ) -> App:
        """`siblings`: the other workers on this port (default: as the supervisor's environment says)."""
        metrics = metrics or Metrics()
        metrics.allow(
            models=(m.name for m in config.models), tasks=(*(m.task for m in config.models), *RPC_TASKS)
        )
        tokens = TokenStore(Path(config.auth.tokens_file)) if config.auth.tokens_file else None
        # No interceptor unless tokens are checked: each costs every call (logs.LoggedServices says how much).
        interceptors = [AuthInterceptor(tokens, on_reject=_rejected)] if tokens else []
        server = grpc.aio.server(
            options=server_options(config),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.grpc.max_concurrent_rpcs,
        )
        health_servicer = health.aio.HealthServicer()
        app_holder: list[App] = []

        def on_health(name: str, ok: bool) -> None:
            app_holder[0].schedule_health(name, ok)

        registry = Registry(config, metrics, on_health=on_health)
        if siblings is None and is_worker():
            siblings = relay.Siblings.from_env(worker_index())
        state = ServerState(config=config, registry=registry, metrics=metrics, siblings=siblings)
        services = [_add(servicer(state), pb2, pb2_grpc, server) for servicer, pb2, pb2_grpc in SERVICES]
        others = logs.LoggedServices(server, config.logging.health_checks)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, others)
        services += [health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME]
        # What reflection.enable_server_reflection does for an asyncio server, registered through `others`.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(services), others
        )
        app = cls(
            config=config, metrics=metrics, server=server, state=state, health=health_servicer, tokens=tokens
        )
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
        the port (0 picks a free one), starts serving health at once and loads models behind it.

        A worker whose siblings serve the port meanwhile (workers.binds_early says which) loads first and
        binds after: the kernel hands a new connection to any socket listening on the port, and one that
        reached a loading worker would get UNAVAILABLE for every call while a sibling could serve it (HTTP/2
        connections stay with their worker). gRPC listens at add_port, and a port added after start()
        listens without ever serving, so the whole server starts late."""
        await asyncio.to_thread(check_budgets, self.config.models)
        await self.health.set("", NOT_SERVING)
        for name in self.state.registry.instances:
            await self.health.set(name, NOT_SERVING)
        loop = asyncio.get_running_loop()
        if binds_early():
            await self._serve()
            self._load_task = loop.create_task(self.state.registry.load_all())
        else:
            self.port = self.config.port
            self._load_task = loop.create_task(self._load_then_serve())
        return self.port

    async def _serve(self) -> None:
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls.enabled:
            self.port = self.server.add_secure_port(address, server_credentials(self.config.tls))
        else:
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind {self.config.host}:{self.config.port}")
        siblings = self.state.siblings
        if siblings is not None and not self.server.add_insecure_port(siblings.address):
            raise OSError(f"cannot bind {siblings.address} (live streams relayed by sibling workers)")
        await self.server.start()
        if self.config.health_port is not None:
            await self._start_health_server()
        log.info("listening on %s:%d", self.config.host, self.port)

    async def _load_then_serve(self) -> None:
        await self.state.registry.load_all()
        if self.state.draining:
            return
        try:
            await self._serve()
        except (OSError, RuntimeError) as exc:  # gRPC raises RuntimeError when it cannot bind
            log.error("%s", exc)
            if self.on_bind_failure is not None:
                self.on_bind_failure(exc)

    async def _start_health_server(self) -> None:
        """grpc.health.v1 alone, in plaintext, on its own port: Kubernetes' native gRPC probes speak no
        TLS, and the health status is no secret (the same servicer answers on the main port)."""
        self.health_server = grpc.aio.server()
        others = logs.LoggedServices(self.health_server, self.config.logging.health_checks)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, others)
        address = f"{self.config.host}:{self.config.health_port}"
        self.health_port = self.health_server.add_insecure_port(address)
        if self.health_port == 0:
            raise OSError(f"cannot bind {address}")
        await self.health_server.start()
        log.info("health checks in plaintext on %s:%d", self.config.host, self.health_port)

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def drain(self, grace_s: float | None = None) -> None:
        """NOT_SERVING, refuse new calls (UNAVAILABLE), let calls in flight finish within the grace, stop."""
        grace = self.config.grace_period_s if grace_s is None else grace_s
        self.state.draining = True
        self.state.drain_started.set()
        if self.state.siblings is not None:
            self.state.siblings.withdraw()
        await self.health.enter_graceful_shutdown()
        try:
            await asyncio.wait_for(self.state.idle.wait(), grace)
        except TimeoutError:
            log.warning("%d calls still running after %.1f s grace; stopping", self.state.inflight, grace)
        await self.server.stop(0)
        if self.state.siblings is not None:
            await self.state.siblings.close()
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.state.registry.close()
