"""asyncio twin of the generic call: `await pipe(inputs, **parameters)` is one GenericService.Run (lists
go whole, as the pipeline takes them); `pipe.iterate(inputs)` runs one call per item, in order."""

from __future__ import annotations

from typing import Any

from ..generic import GenericPipeline
from .calls import unary
from .task_pipeline import AsyncPipeline


class AsyncGenericPipeline(AsyncPipeline):
    sync: GenericPipeline

    def _unit(self, one: Any) -> Any:
        return one

    async def _send(self, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        client = self.sync.client
        response = await unary(client.generic.Run, self.sync.request(unit, kwargs), client.timeout)
        return [self.sync.result(response)]
