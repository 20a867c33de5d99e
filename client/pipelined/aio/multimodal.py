"""asyncio twin of image-text-to-text: the remote-pipeline twin plus `stream`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from .. import _transport
from ..pipelines.multimodal import ImageTextToTextPipeline
from .base import AsyncPipeline


class AsyncImageTextToTextPipeline(AsyncPipeline):
    sync: ImageTextToTextPipeline

    async def stream(self, images: Any = None, text: Any = None, **kwargs: Any) -> AsyncIterator[str]:
        """Yields the new text of one prompt piece by piece; leaving the loop early cancels the generation."""
        client = self.sync.client
        timeout = self.sync.call_timeout(kwargs)
        request = self.sync.stream_request(images, text, **kwargs)
        async for response in _transport.aopened_stream(
            lambda: client.multimodal.StreamGenerateFromImage(request, timeout=timeout), self.sync.waiting()
        ):
            yield response.text
