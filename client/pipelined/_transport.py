"""The transport every pipeline shares (a leaf: it imports only `errors` and the generated stubs): channel
options, the service stubs, and unary calls, futures and response streams with gRPC errors mapped to the
SDK's typed exceptions, synchronous and asyncio; and the bounded wait (with backoff) of a call made while the
server starts or its model loads."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2_grpc

from .errors import Unavailable, from_rpc_error
from .v1 import (
    audio_tasks_pb2_grpc,
    generic_pb2_grpc,
    models_pb2_grpc,
    multimodal_pb2_grpc,
    speech_pb2_grpc,
    text_pb2_grpc,
    vision_pb2_grpc,
)

R = TypeVar("R")

DEFAULT_TARGET = "localhost:50051"
# Audio files can be large; match the server's default limit.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]
# Attribute name on a client -> the stub class for its channel.
STUBS: dict[str, Any] = {
    "speech": speech_pb2_grpc.SpeechServiceStub,
    "models_stub": models_pb2_grpc.ModelsServiceStub,
    "health_stub": health_pb2_grpc.HealthStub,
    "text": text_pb2_grpc.TextServiceStub,
    "generic": generic_pb2_grpc.GenericServiceStub,
    "vision": vision_pb2_grpc.VisionServiceStub,
    "multimodal": multimodal_pb2_grpc.MultimodalServiceStub,
    "audio_tasks": audio_tasks_pb2_grpc.AudioServiceStub,
}


def attach_stubs(client: Any, channel: Any) -> None:
    """Gives a client (sync or asyncio) one stub per service on its channel."""
    for name, stub in STUBS.items():
        setattr(client, name, stub(channel))


# ---- synchronous
def call(method: Any, request: Any, timeout: float | None, waiting: Waiting | None = None) -> Any:
    """One unary call (tried again while the server starts or the model loads, within `waiting`)."""

    def attempt() -> Any:
        try:
            return method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    return waiting_for(attempt, waiting)


def submit(method: Any, request: Any, timeout: float | None) -> Any:
    """One unary call started in the background: its future (read it with `result`)."""
    return method.future(request, timeout=timeout)


def result(future: Any) -> Any:
    try:
        return future.result()
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


def stream(responses: Any) -> Iterator[Any]:
    """The responses of a streaming call; leaving early cancels the call."""
    try:
        yield from responses
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    finally:
        responses.cancel()


# ---- asyncio
async def acall(method: Any, request: Any, timeout: float | None, waiting: Waiting | None = None) -> Any:
    """Awaits one call of an asyncio stub method (tried again within `waiting`, as `call`)."""

    async def attempt() -> Any:
        try:
            return await method(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    return await awaiting_for(attempt, waiting)


async def astream(responses: Any) -> AsyncIterator[Any]:
    """The responses of an asyncio streaming call; leaving early (break, aclose, cancellation) cancels
    the call, so the server stops working for a caller that is gone."""
    try:
        async for response in responses:
            yield response
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    finally:
        responses.cancel()


# ---- waiting for a server that starts or a model that loads (wait_for_ready)
DEFAULT_WAIT_FOR_READY_S = 30.0
# Backoff between tries: short at first (a model that is nearly loaded), capped so a long wait still
# notices readiness within a second or two.
_FIRST_DELAY_S = 0.1
_MAX_DELAY_S = 2.0


class Readiness(enum.Enum):
    """What the probe after an UNAVAILABLE found."""

    # The server cannot be reached yet, or the model is loading: worth waiting out.
    STARTING = "starting"
    # The model is served now. The UNAVAILABLE came from before: the server began listening between the
    # call and the probe (CI met this race). Worth one more try, not a wait without end.
    READY = "ready"
    # The model failed to load, the server drains, or it does not know the model: waiting cannot help.
    NOT_STARTING = "not starting"


@dataclass(frozen=True)
class Waiting:
    """How a call waits after UNAVAILABLE: for at most `bound_s` seconds in all, and only while
    `readiness()` says the server is unreachable or the model is loading (a model that failed to
    load, or a draining server, fails at once). `what` names what is awaited, for the error."""

    bound_s: float
    readiness: Callable[[], Any]
    what: str

    def gave_up(self, error: Unavailable) -> Unavailable:
        return Unavailable(
            f"{error.message} (waited {self.bound_s:g} s for {self.what}; wait longer with "
            "Client(wait_for_ready=SECONDS), or `pipelined --wait SECONDS`)"
        )


def wait_bound(wait_for_ready: bool | float | None) -> float:
    """Client(wait_for_ready=...): True -> the default bound, False/None/0 -> no waiting, a number -> seconds."""
    if wait_for_ready is True:
        return DEFAULT_WAIT_FOR_READY_S
    if not wait_for_ready:
        return 0.0
    if wait_for_ready < 0:
        raise ValueError(f"wait_for_ready must be >= 0 seconds, got {wait_for_ready}")
    return float(wait_for_ready)


def _time_left(waiting: Waiting | None, error: Unavailable, started: float) -> float:
    """Seconds this call may still wait after `error`; raises it when the call does not wait, and the
    gave-up error once the bound has passed."""
    if waiting is None or waiting.bound_s <= 0:
        raise error
    left = waiting.bound_s - (time.monotonic() - started)
    if left <= 0:
        raise waiting.gave_up(error) from None
    return left


def _next_delay(delay: float) -> float:
    return min(delay * 2, _MAX_DELAY_S)


def waiting_for(attempt: Callable[[], R], waiting: Waiting | None) -> R:
    """`attempt()`, tried again with backoff while it raises Unavailable and the server is still starting
    (and once at once if the probe finds the model served: the server came up since the attempt)."""
    started = time.monotonic()
    delay = _FIRST_DELAY_S
    tried_when_ready = False
    while True:
        try:
            return attempt()
        except Unavailable as error:
            left = _time_left(waiting, error, started)
            found = waiting.readiness() if waiting else Readiness.NOT_STARTING
            if found is Readiness.READY and not tried_when_ready:
                tried_when_ready = True
                continue
            if found is not Readiness.STARTING:
                raise
            time.sleep(min(delay, left))
            delay = _next_delay(delay)


async def awaiting_for(attempt: Callable[[], Awaitable[R]], waiting: Waiting | None) -> R:
    """The asyncio twin of `waiting_for` (`readiness` is awaited)."""
    started = time.monotonic()
    delay = _FIRST_DELAY_S
    tried_when_ready = False
    while True:
        try:
            return await attempt()
        except Unavailable as error:
            left = _time_left(waiting, error, started)
            found = await waiting.readiness() if waiting else Readiness.NOT_STARTING
            if found is Readiness.READY and not tried_when_ready:
                tried_when_ready = True
                continue
            if found is not Readiness.STARTING:
                raise
            await asyncio.sleep(min(delay, left))
            delay = _next_delay(delay)


def opened_stream(start: Callable[[], Any], waiting: Waiting | None) -> Iterator[Any]:
    """A server-streaming call started by `start()` (the stub call), waited for like a unary call until its
    first response arrives (nothing was computed for a call that failed before it), then read as `stream`."""

    def first() -> tuple[Any, list[Any]]:
        responses = start()
        try:
            return responses, [next(responses)]
        except StopIteration:
            return responses, []
        except grpc.RpcError as error:
            responses.cancel()
            raise from_rpc_error(error) from None

    responses, head = waiting_for(first, waiting)
    yield from head
    yield from stream(responses)


async def aopened_stream(start: Callable[[], Any], waiting: Waiting | None) -> AsyncIterator[Any]:
    """The asyncio twin of `opened_stream`."""

    async def first() -> tuple[Any, AsyncIterator[Any], list[Any]]:
        responses = start()
        iterator = responses.__aiter__()
        try:
            return responses, iterator, [await iterator.__anext__()]
        except StopAsyncIteration:
            return responses, iterator, []
        except grpc.RpcError as error:
            responses.cancel()
            raise from_rpc_error(error) from None

    responses, iterator, head = await awaiting_for(first, waiting)
    try:
        for response in head:
            yield response
        async for response in iterator:
            yield response
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    finally:
        responses.cancel()
