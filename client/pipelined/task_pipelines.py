"""Every task pipeline class other than ASR, by task name (what `Client.pipeline(task)` dispatches on)."""

from __future__ import annotations

from . import audio_tasks, multimodal, vision
from .task_pipeline import TaskPipeline

PIPELINES: dict[str, type[TaskPipeline]] = {
    **vision.PIPELINES,
    **multimodal.PIPELINES,
    **audio_tasks.PIPELINES,
}
