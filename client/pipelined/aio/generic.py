"""asyncio twin of the generic call: `await pipe(inputs, **parameters)` is one GenericService.Run (lists
go whole, as the pipeline takes them); `pipe.iterate(inputs)` runs one call per item, in order."""

from __future__ import annotations

from ..pipelines.generic import GenericPipeline
from .base import AsyncPipeline


class AsyncGenericPipeline(AsyncPipeline):
    sync: GenericPipeline
