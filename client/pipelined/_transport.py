"""The transport every pipeline shares (a leaf: it imports only `errors` and the generated stubs): channel
options, the service stubs, and unary calls, futures and response streams with gRPC errors mapped to the
SDK's typed exceptions, synchronous and asyncio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from .errors import from_rpc_error
from .v1 import (
    audio_tasks_pb2_grpc,
    generic_pb2_grpc,
    models_pb2_grpc,
    multimodal_pb2_grpc,
    speech_pb2_grpc,
    text_pb2_grpc,
    vision_pb2_grpc,
)

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
def call(method: Any, request: Any, timeout: float | None) -> Any:
    """One unary call."""
    try:
        return method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


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
async def acall(method: Any, request: Any, timeout: float | None) -> Any:
    """Awaits one call of an asyncio stub method."""
    try:
        return await method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


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
