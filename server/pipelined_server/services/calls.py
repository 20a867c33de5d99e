"""Every RPC passes through here: refusal while draining, error -> status mapping, metrics, in-flight count.

This is the one place exceptions become gRPC status codes: typed PipelinedErrors keep their code and
message (the scheduler turns the pipeline's own argument errors into InvalidInput); anything else is a
server defect: INTERNAL, logged, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ..budget import ByteBudget
from ..config import ServerConfig
from ..errors import Cancelled, PipelinedError
from ..metrics import Metrics
from ..registry import Registry

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """What every servicer shares."""

    config: ServerConfig
    registry: Registry
    metrics: Metrics
    draining: bool = False
    # Set when draining starts: live streams stop reading, flush, and end (services/speech.py).
    drain_started: asyncio.Event = field(default_factory=asyncio.Event)
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Decoded request payloads held by all calls at once (limits.max_decoded_bytes_in_flight).
    decoded_bytes: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        self.idle.set()
        self.decoded_bytes = ByteBudget(self.config.limits.max_decoded_bytes_in_flight, "request payloads")


@dataclass
class CallInfo:
    """Labels of one call; the servicer fills in the model once it knows it."""

    method: str
    task: str
    model: str = ""

    def timeout(self, context: grpc.aio.ServicerContext) -> float | None:
        return context.time_remaining()


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, PipelinedError):
        return exc.code, exc.message
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


def _trailers(exc: BaseException) -> tuple[tuple[str, str], ...]:
    """A retry hint as trailing metadata (`retry-after-ms`, like HTTP's Retry-After), where the error has one."""
    retry = getattr(exc, "retry_after_s", None)
    return (("retry-after-ms", str(round(retry * 1000))),) if retry is not None else ()


class _Tracked:
    """Counts a call in flight and records its outcome."""

    def __init__(self, state: ServerState, info: CallInfo) -> None:
        self.state, self.info = state, info
        self.started = time.monotonic()

    def __enter__(self) -> _Tracked:
        self.state.inflight += 1
        self.state.idle.clear()
        return self

    def finish(self, code: grpc.StatusCode) -> None:
        labels = (self.info.model or "unknown", self.info.task, self.info.method)
        self.state.metrics.requests.labels(*labels, code.name).inc()
        self.state.metrics.request_latency.labels(*labels).observe(time.monotonic() - self.started)

    def __exit__(self, *exc: object) -> None:
        self.state.inflight -= 1
        if self.state.inflight == 0:
            self.state.idle.set()


async def _refuse_if_draining(state: ServerState, context: grpc.aio.ServicerContext, info: CallInfo) -> None:
    if state.draining:
        state.metrics.requests.labels("unknown", info.task, info.method, "UNAVAILABLE").inc()
        await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another instance")


def _ended_early(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why a handler was interrupted: gRPC cancels it both when the caller cancels and at its deadline."""
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= 0
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


def rpc(task: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates a servicer method `(self, request, context, call: CallInfo)`; unary or server-streaming."""

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
                state: ServerState = self.state
                info = CallInfo(method.__name__, task)
                await _refuse_if_draining(state, context, info)
                with _Tracked(state, info) as tracked:
                    try:
                        async for response in method(self, request, context, info):
                            yield response
                    except (asyncio.CancelledError, GeneratorExit):
                        tracked.finish(_ended_early(context))
                        raise
                    except Exception as exc:
                        code, message = _status_of(exc)
                        tracked.finish(code)
                        await context.abort(code, message, _trailers(exc))
                    tracked.finish(grpc.StatusCode.OK)

            return stream_wrapper

        @functools.wraps(method)
        async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            state: ServerState = self.state
            info = CallInfo(method.__name__, task)
            await _refuse_if_draining(state, context, info)
            with _Tracked(state, info) as tracked:
                try:
                    response = await method(self, request, context, info)
                except asyncio.CancelledError:
                    tracked.finish(_ended_early(context))
                    raise
                except Exception as exc:
                    code, message = _status_of(exc)
                    tracked.finish(code)
                    await context.abort(code, message, _trailers(exc))
                tracked.finish(grpc.StatusCode.OK)
                return response

        return unary_wrapper

    return decorate


__all__ = ["CallInfo", "Cancelled", "ServerState", "rpc"]
