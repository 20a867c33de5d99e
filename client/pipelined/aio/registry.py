"""The asyncio twin of each sync pipeline: the families with streams have their own twin, every other
pipeline the plain one."""

from __future__ import annotations

from typing import Any

from ..pipelines.generation import TextGenerationPipeline
from ..pipelines.generic import GenericPipeline
from ..pipelines.multimodal import ImageTextToTextPipeline
from ..pipelines.speech import SpeechRecognitionPipeline
from .base import AsyncPipeline
from .generation import AsyncTextGenerationPipeline
from .generic import AsyncGenericPipeline
from .multimodal import AsyncImageTextToTextPipeline
from .speech import AsyncSpeechRecognitionPipeline

TWINS: list[tuple[type, type[AsyncPipeline]]] = [
    (SpeechRecognitionPipeline, AsyncSpeechRecognitionPipeline),
    (ImageTextToTextPipeline, AsyncImageTextToTextPipeline),
    (TextGenerationPipeline, AsyncTextGenerationPipeline),
    (GenericPipeline, AsyncGenericPipeline),
]


def twin(sync: Any) -> AsyncPipeline:
    """The asyncio twin of a sync pipeline (most specific class first)."""
    for base, cls in TWINS:
        if isinstance(sync, base):
            return cls(sync)
    return AsyncPipeline(sync)
