"""Every typed pipeline by task name, transformers' task aliases, and `make_pipeline` (what
`Client.pipeline(task)` dispatches on): the generic call for every task without a typed one."""

from __future__ import annotations

from typing import Any

from . import audio, generation, multimodal, speech, text, vision
from .base import RemotePipeline, Stubs
from .generic import GenericPipeline

PIPELINES: dict[str, type[RemotePipeline]] = {
    speech.SpeechRecognitionPipeline.task: speech.SpeechRecognitionPipeline,
    **text.PIPELINES,
    generation.TextGenerationPipeline.task: generation.TextGenerationPipeline,
    **vision.PIPELINES,
    **multimodal.PIPELINES,
    **audio.PIPELINES,
}
# transformers' task aliases.
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


def make_pipeline(client: Stubs, task: str, model: str | None, defaults: dict[str, Any]) -> RemotePipeline:
    """A typed pipeline for tasks with a typed call; the generic call for every other task."""
    task = ALIASES.get(task, task)
    if task in PIPELINES:
        return PIPELINES[task](client, model, **defaults)
    return GenericPipeline(client, task, model, **defaults)
