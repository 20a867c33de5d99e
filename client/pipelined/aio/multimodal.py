"""asyncio twin of image-text-to-text: the TaskPipeline twin plus `stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ..multimodal import ImageTextToTextPipeline
from .calls import streamed
from .task_pipeline import AsyncTaskPipeline


class AsyncImageTextToTextPipeline(AsyncTaskPipeline):
    sync: ImageTextToTextPipeline

    async def stream(self, images: Any = None, text: Any = None, **kwargs: Any) -> AsyncIterator[str]:
        """Yields the new text of one prompt piece by piece; leaving the loop early cancels the generation."""
        client = self.sync.client
        request = self.sync.stream_request(images, text, **kwargs)
        async for response in streamed(
            client.multimodal.StreamGenerateFromImage(request, timeout=client.timeout)
        ):
            yield response.text
