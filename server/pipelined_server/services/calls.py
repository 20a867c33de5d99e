"""Every RPC passes through here: refusal while draining, error -> status mapping, metrics, the access log
line and request id, per-model access (a token limited to some models), in-flight count.

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

from .. import logs, security
from ..budget import ByteBudget
from ..config import ServerConfig
from ..errors import Cancelled, PipelinedError, QueueFull
from ..metrics import Metrics
from ..registry import Registry
from ..streaming import relay

log = logging.getLogger(__name__)
# The pause a full queue asks for when it names none.
QUEUE_FULL_RETRY_S = 0.5


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
    # The other workers on this port, where there are some (live streams one worker cannot admit go there).
    siblings: relay.Siblings | None = None
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    # Decoded request payloads held by all calls at once (limits.max_decoded_bytes_in_flight).
    decoded_bytes: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        self.idle.set()
        self.decoded_bytes = ByteBudget(self.config.limits.max_decoded_bytes_in_flight, "request payloads")


# Every task label an @rpc method declares: with the served tasks, the only task labels metrics admit.
RPC_TASKS: set[str] = set()


@dataclass
class CallInfo:
    """Labels of one call; the servicer fills in the model once it knows it, which is where a token
    limited to some models is refused (PERMISSION_DENIED) before any work."""

    method: str
    task: str
    request_id: str = ""
    # Who called: read when the call starts (a handler ended by the caller's cancellation may be closed
    # after gRPC freed the call, when asking the context would crash the process).
    peer: str = ""
    principal: str = ""
    # A live stream relayed by a sibling worker (streaming/relay.py); `peer` is then its client's address.
    relayed: bool = False
    # This worker relayed the call to a sibling, which records it (metrics, access log): it counts once.
    recorded_elsewhere: bool = False
    _model: str = field(default="", repr=False)

    @property
    def model(self) -> str:
        return self._model

    @model.setter
    def model(self, name: str) -> None:
        security.check_model(name)
        self._model = name

    def timeout(self, context: grpc.aio.ServicerContext) -> float | None:
        return context.time_remaining()


def _status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, PipelinedError):
        return exc.code, exc.message
    log.exception("internal error", exc_info=exc)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}"


async def _abort(
    context: grpc.aio.ServicerContext, info: CallInfo, exc: BaseException, code: grpc.StatusCode, message: str
) -> None:
    """Ends the call with the status of `exc`, the request id and the error's retry hint: `retry-after-ms`
    for any client, and for RESOURCE_EXHAUSTED gRPC's own `grpc-retry-pushback-ms`, which the SDK's retry
    policy honours: a full queue asks to be retried after a pause, a request over a budget (negative
    hint) not at all."""
    trailers: tuple[tuple[str, str], ...] = ((logs.REQUEST_ID_KEY, info.request_id),)
    retry = getattr(exc, "retry_after_s", None)
    if retry is None and isinstance(exc, QueueFull):
        retry = QUEUE_FULL_RETRY_S
    if retry is not None:
        trailers += (("retry-after-ms", str(round(retry * 1000))),)
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED:
        trailers += (("grpc-retry-pushback-ms", str(round(retry * 1000)) if retry is not None else "-1"),)
    await context.abort(code, message, trailing_metadata=trailers)


def _record(state: ServerState, info: CallInfo, code: grpc.StatusCode, started: float) -> None:
    """Metrics (labels only from served models and tasks) and the access log line of a finished call."""
    latency = time.monotonic() - started
    metrics = state.metrics
    model = metrics.model_label(info.model)
    metrics.finished_call(model, metrics.task_label(info.task), info.method, code.name, latency)
    logs.access(
        method=info.method,
        model=model if info.model else "",
        code=code,
        latency_s=latency,
        peer=info.peer,
        request_id=info.request_id,
        principal=info.principal,
    )


def _start(context: grpc.aio.ServicerContext, method: str, task: str) -> CallInfo:
    """The call's labels and request id; the id goes back in the trailing metadata, errors included."""
    metadata = context.invocation_metadata()
    request_id = logs.request_id(metadata)
    peer = context.peer()
    client = relay.forwarded_peer(peer, metadata)
    info = CallInfo(method, task, request_id, client or peer, security.principal(), client is not None)
    context.set_trailing_metadata(((logs.REQUEST_ID_KEY, info.request_id),))
    return info


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
        if not self.info.recorded_elsewhere:
            _record(self.state, self.info, code, self.started)

    def __exit__(self, *exc: object) -> None:
        self.state.inflight -= 1
        if self.state.inflight == 0:
            self.state.idle.set()


async def _refuse_if_draining(state: ServerState, context: grpc.aio.ServicerContext, info: CallInfo) -> None:
    if state.draining:
        _record(state, info, grpc.StatusCode.UNAVAILABLE, time.monotonic())
        await context.abort(grpc.StatusCode.UNAVAILABLE, "server is shutting down; retry on another instance")


# The caller's own deadline timer fires before the server's, which counts from when the call arrived: the
# client then cancels the call (RST_STREAM), and the server sees a cancel with a few ms left (6 ms measured
# here on localhost for a live stream's deadline_s, which was counted CANCELLED). A cancel this close to
# the deadline is the deadline.
DEADLINE_SLACK_S = 0.25


def _dropped(context: grpc.aio.ServicerContext, error: PipelinedError) -> None:
    """The server is about to cancel a handler itself, with `error` as its reason (a live stream whose
    client reads nothing): `_ended_early` reports that code; the client, not reading, cannot receive it."""
    log.warning("%s dropped: %s", context.peer(), error.message)
    context.set_code(error.code)
    context.set_details(error.message)


def _ended_early(context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    """Why a handler was interrupted: gRPC cancels it both when the caller cancels and at its deadline,
    and the server when it drops a call (`_dropped`)."""
    code = context.code()
    if isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK:
        return code
    remaining = context.time_remaining()
    expired = remaining is not None and remaining <= DEADLINE_SLACK_S
    return grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED


def rpc(task: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorates a servicer method `(self, request, context, call: CallInfo)`; unary or server-streaming."""

    RPC_TASKS.add(task)

    def decorate(method: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(method):

            @functools.wraps(method)
            async def stream_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
                state: ServerState = self.state
                info = _start(context, method.__name__, task)
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
                        await _abort(context, info, exc, code, message)
                    tracked.finish(grpc.StatusCode.OK)

            return stream_wrapper

        @functools.wraps(method)
        async def unary_wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            state: ServerState = self.state
            info = _start(context, method.__name__, task)
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
                    await _abort(context, info, exc, code, message)
                tracked.finish(grpc.StatusCode.OK)
                return response

        return unary_wrapper

    return decorate


__all__ = ["CallInfo", "Cancelled", "ServerState", "rpc"]
