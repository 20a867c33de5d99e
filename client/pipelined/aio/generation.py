"""asyncio twin of text-generation: the remote-pipeline twin plus `stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .. import _transport
from ..pipelines.generation import TextGenerationPipeline
from .base import AsyncPipeline


class AsyncTextGenerationPipeline(AsyncPipeline):
    sync: TextGenerationPipeline

    async def stream(self, prompt: Any, **kwargs: Any) -> AsyncIterator[str]:
        """Yields pieces of new text (prompt excluded) as the server generates them; leaving the loop
        early cancels the generation."""
        client = self.sync.client
        timeout = self.sync.call_timeout(kwargs)
        request = self.sync.stream_request(prompt, kwargs)
        async for response in _transport.aopened_stream(
            lambda: client.text.StreamGenerateText(request, timeout=timeout), self.sync.waiting()
        ):
            yield response.text
