"""asyncio twins of the text pipelines: lists go in requests of up to `inputs_per_request` inputs (as
the sync pipeline splits them), iterables one input per request; text-generation also streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..text_pipeline import TextGenerationPipeline, TextPipeline
from .calls import streamed, unary
from .task_pipeline import AsyncPipeline


class AsyncTextPipeline(AsyncPipeline):
    sync: TextPipeline

    def _unit(self, one: Any) -> list[Any]:
        return [one]

    def _units(self, items: list[Any]) -> list[Any]:
        return self.sync.chunks(items)

    async def _send(self, unit: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        response = await unary(self.sync.method(), self.sync.request(unit, kwargs), self.sync.client.timeout)
        return self.sync.results(response, kwargs)

    def _present(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        return self.sync.present_single(result, inputs, kwargs)


class AsyncTextGenerationPipeline(AsyncTextPipeline):
    sync: TextGenerationPipeline

    async def stream(self, prompt: Any, **kwargs: Any) -> AsyncIterator[str]:
        """Yields pieces of new text (prompt excluded) as the server generates them; leaving the loop
        early cancels the generation."""
        client = self.sync.client
        request = self.sync.stream_request(prompt, kwargs)
        async for response in streamed(client.text.StreamGenerateText(request, timeout=client.timeout)):
            yield response.text
