"""The asyncio transport the pipeline twins share: one awaited unary call, a stream of responses, and
bounded in-order fan-out over a list or a (possibly async) iterable."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

import grpc

from ..errors import from_rpc_error

R = TypeVar("R")


async def unary(method: Any, request: Any, timeout: float | None) -> Any:
    """Awaits one call of an asyncio stub method; gRPC errors become the SDK's typed exceptions."""
    try:
        return await method(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None


async def streamed(call: Any) -> AsyncIterator[Any]:
    """The responses of a streaming call; leaving early (break, aclose, cancellation) cancels the call, so
    the server stops working for a caller that is gone."""
    try:
        async for response in call:
            yield response
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    finally:
        call.cancel()


async def in_order(
    calls: Iterable[Awaitable[list[R]]] | AsyncIterable[Awaitable[list[R]]], max_in_flight: int
) -> AsyncIterator[R]:
    """Runs the calls (each giving the results of one request) at most `max_in_flight` at once and yields
    their results in call order. Calls are created only as fast as they are consumed: the source may be
    endless."""
    pending: deque[asyncio.Future[list[R]]] = deque()
    try:
        async for call in aiter_of(calls):
            pending.append(asyncio.ensure_future(call))
            if len(pending) >= max(1, max_in_flight):
                for result in await pending.popleft():
                    yield result
        while pending:
            for result in await pending.popleft():
                yield result
    finally:
        for future in pending:
            future.cancel()


async def aiter_of(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[Any]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def threaded(items: Iterable[Any]) -> AsyncIterator[Any]:
    """A sync iterable read on a worker thread, for sources that block while they pace themselves."""
    iterator = iter(items)
    done = object()
    while (item := await asyncio.to_thread(next, iterator, done)) is not done:
        yield item
