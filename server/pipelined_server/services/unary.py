"""The one path of every unary RPC: registry lookup -> the adapter's arguments -> its items (decoded off
the event loop) -> queue room for all of them -> submit and gather -> the adapter's response.

Servicers are thin: each unary method is this path with its task's adapter (tasks/). `@rpc` around it
(calls.py) still refuses calls while draining, maps errors to status codes and counts metrics.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import grpc

from ..batching import Scheduler, gather_or_cancel
from ..budget import holding
from ..registry import ModelInstance
from ..tasks.adapter import Adapter, Item
from .calls import CallInfo, ServerState

Request = TypeVar("Request")
Response = TypeVar("Response")


class Servicer:
    """Base of every pipeline servicer: the shared state, and the unary path."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def unary(
        self,
        adapter: Adapter[Request, Response],
        request: Request,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> Response:
        # What the call decodes is reserved from the server-wide budget until it answers (budget.py).
        with holding(self.state.decoded_bytes):
            return await self._unary(adapter, request, context, call)

    async def _unary(
        self,
        adapter: Adapter[Request, Response],
        request: Request,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> Response:
        config = self.state.config
        call.task = adapter.task_of(request)
        instance = self.state.registry.ready(adapter.model_of(request), call.task)
        call.model = instance.name
        kwargs = adapter.arguments(request, instance, config)
        assert instance.scheduler is not None
        instance.scheduler.ensure_room(1)  # a full queue refuses before anything is decoded
        if adapter.decodes:
            items = await asyncio.to_thread(adapter.items, request, instance, config, kwargs)
        else:
            items = adapter.items(request, instance, config, kwargs)
        outputs = await run_items(instance, items, kwargs, context.time_remaining())
        if adapter.encodes:
            return await asyncio.to_thread(adapter.response, request, instance, kwargs, items, outputs)
        return adapter.response(request, instance, kwargs, items, outputs)


async def run_items(
    instance: ModelInstance, items: Sequence[Item], kwargs: dict[str, Any], timeout: float | None
) -> list[Any]:
    """Each item goes to the scheduler on its own, so items of this and other requests batch together; a
    request is queued whole or not at all, and its first failure cancels the rest."""
    assert instance.scheduler is not None
    scheduler = instance.scheduler
    scheduler.ensure_room(len(items))
    if len(items) == 1:  # the common case, without a task and a gather around the one submission
        return [await _submit(scheduler, items[0], kwargs, timeout)]
    return await gather_or_cancel(_submit(scheduler, item, kwargs, timeout) for item in items)


def _submit(
    scheduler: Scheduler, item: Item, kwargs: dict[str, Any], timeout: float | None
) -> Awaitable[Any]:
    if item.call is not None:
        return scheduler.submit_call(item.call, timeout=timeout)
    own = kwargs if item.kwargs is None else item.kwargs
    return scheduler.submit(item.payload, own, key=item.key, batchable=item.batchable, timeout=timeout)
