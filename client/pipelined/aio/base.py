"""The asyncio twin of the remote pipeline, built on the same steps (see `pipelines/base.py`): the sync
pipeline (made with the asyncio client, so its `method()` is the asyncio stub method) parses each call,
builds each request and reads each response; the twin only awaits. `await pipe(x)`: one input -> its
result, a list (or any iterable, or a dataset) -> a list, at most `max_in_flight` requests at once, results
in input order; `pipe.iterate(inputs)`: results of a (possibly async) iterable or a dataset as they come, in
input order. A dataset (`KeyDataset`, `KeyPairDataset`, anything with `__len__` and `__getitem__`) is read
on a worker thread, item by item as requests leave: its `__getitem__` may decode files without blocking
the event loop. `batch_size`/`num_workers` are accepted as by the sync pipeline."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from typing import Any, TypeVar

from .. import _transport
from ..pipelines.base import DEFAULT_MAX_IN_FLIGHT, RemotePipeline, is_dataset, iter_dataset

R = TypeVar("R")


class AsyncPipeline:
    """The twin of any RemotePipeline; families with streams add their awaited streams."""

    sync: RemotePipeline

    def __init__(self, sync: Any) -> None:
        self.sync = sync
        self.max_in_flight: int = getattr(sync, "max_in_flight", DEFAULT_MAX_IN_FLIGHT)

    @property
    def task(self) -> str:
        return str(self.sync.task)

    @property
    def model(self) -> str:
        return str(self.sync.model)

    @property
    def defaults(self) -> dict[str, Any]:
        return dict(self.sync.defaults)

    async def send(self, unit: Any, kwargs: dict[str, Any], timeout: float | None) -> list[Any]:
        """Sends one request; its results, one per input of the unit."""
        sync = self.sync
        request = sync.build_request(unit, kwargs)
        response = await _transport.acall(sync.method(), request, timeout, sync.waiting())
        return list(sync.read_results(response, unit, kwargs))

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        timeout = self.sync.call_timeout(kwargs)
        inputs, merged = self.sync.parse_call(*args, **self.sync.without_loader_arguments(kwargs))
        if self.sync.is_single(inputs):
            results = await self.send(self.sync.request_unit(inputs), merged, timeout)
            return self.sync.present(results[0], inputs, merged)
        if isinstance(inputs, list | tuple):
            calls = (self.send(unit, merged, timeout) for unit in self.sync.request_units(list(inputs)))
            return [result async for result in in_order(calls, self.max_in_flight)]
        if isinstance(inputs, Iterable | AsyncIterable) or is_dataset(inputs):
            return [result async for result in self.iterate(inputs, timeout=timeout, **merged)]
        raise TypeError(f"unsupported {self.task} input of type {type(inputs).__name__}")

    def iterate(self, inputs: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """Results of a (possibly async, possibly endless) iterable of single inputs, or of a dataset, in
        input order."""
        timeout = self.sync.call_timeout(kwargs)
        kwargs = self.sync.without_loader_arguments(kwargs)
        items: AsyncIterable[Any]
        if is_dataset(inputs) and not isinstance(inputs, list | tuple | str | bytes | dict):
            items = threaded(inputs if isinstance(inputs, Iterable) else iter_dataset(inputs))
        elif isinstance(inputs, Iterable | AsyncIterable):
            items = aiter_of(inputs)
        else:
            raise TypeError(f"iterate() takes an iterable or a dataset of {self.task} inputs")

        async def calls() -> AsyncIterator[Awaitable[list[Any]]]:
            async for item in items:
                one, merged = self.sync.parse_call(item, **kwargs)
                if not self.sync.is_single(one):
                    raise TypeError(
                        f"iterate() takes one {self.task} input per item, got {type(item).__name__}"
                    )
                yield self.send(self.sync.request_unit(one), merged, timeout)

        return in_order(calls(), self.max_in_flight)


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
