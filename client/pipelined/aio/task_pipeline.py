"""asyncio twins of the synchronous pipelines, built on their hooks: the sync pipeline (made with the
asyncio client, so its `method()` is the asyncio stub method) builds each request and reads each
response; the twin only awaits. `await pipe(x)`: one input -> its result, a list (or any iterable) ->
a list, at most `max_in_flight` requests at once, results in input order; `pipe.iterate(inputs)`:
results of a (possibly async) iterable as they come, in input order."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from typing import Any

from ..task_pipeline import DEFAULT_MAX_IN_FLIGHT, TaskPipeline
from .calls import aiter_of, in_order, unary


class AsyncPipeline:
    """Shared call semantics; subclasses say how inputs map to requests and how a request is sent."""

    sync: Any

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

    # ---- per family
    def _unit(self, one: Any) -> Any:
        """What one request carries for one input."""
        raise NotImplementedError

    def _units(self, items: list[Any]) -> list[Any]:
        """What the requests of a list carry."""
        raise NotImplementedError

    async def _send(self, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        """Sends one request; its results, one per input."""
        raise NotImplementedError

    def _present(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        """The result of a single-input call."""
        return result

    # ---- shared
    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs, merged = self.sync.arguments(*args, **kwargs)
        if self.sync.is_single(inputs):
            (result,) = await self._send(self._unit(inputs), merged)
            return self._present(result, inputs, merged)
        if isinstance(inputs, list | tuple):
            calls = (self._send(unit, merged) for unit in self._units(list(inputs)))
            return [result async for result in in_order(calls, self.max_in_flight)]
        if isinstance(inputs, Iterable | AsyncIterable):
            return [result async for result in self.iterate(inputs, **merged)]
        raise TypeError(f"unsupported {self.task} input of type {type(inputs).__name__}")

    def iterate(self, inputs: Iterable[Any] | AsyncIterable[Any], **kwargs: Any) -> AsyncIterator[Any]:
        """Results of a (possibly async, possibly endless) iterable of single inputs, in input order."""

        async def calls() -> AsyncIterator[Awaitable[list[Any]]]:
            async for item in aiter_of(inputs):
                one, merged = self.sync.arguments(item, **kwargs)
                if not self.sync.is_single(one):
                    raise TypeError(
                        f"iterate() takes one {self.task} input per item, got {type(item).__name__}"
                    )
                yield self._send(self._unit(one), merged)

        return in_order(calls(), self.max_in_flight)


class AsyncTaskPipeline(AsyncPipeline):
    """Twin of a TaskPipeline: one request per input."""

    sync: TaskPipeline

    def _unit(self, one: Any) -> Any:
        return one

    def _units(self, items: list[Any]) -> list[Any]:
        return items

    async def _send(self, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        response = await unary(self.sync.method(), self.sync.request(unit, kwargs), self.sync.client.timeout)
        return [self.sync.result(response, unit, kwargs)]
