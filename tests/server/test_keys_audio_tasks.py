"""The audio adapters' batching rules (tasks/audio_tasks.py `same_length`, `TextToAudio.items`) through the
real scheduler and pipelines: concurrent inputs that could share a batch are queued together, then each result
must equal the in-process pipeline's unbatched one, and the batch sizes in the metrics must be those the rule
claims. Fast (no server, the tiny models cached on disk): the `audio_tasks` mutation group runs this file per
mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_cache import cached_model
from pipelined.v1 import audio_pb2, audio_tasks_pb2
from pipelined_server.config import InputLimits
from pipelined_server.errors import InvalidInput
from pipelined_server.tasks import audio_tasks
from serving import Run, Serving, assert_protos_close, in_process, spec
from tiny_models import SAMPLING_RATE, tiny_audio
from tiny_vision_models import build_tiny_audio_classifier, build_tiny_vits

pytestmark = pytest.mark.timeout(120)

CLASSIFY = audio_tasks.AUDIO_CLASSIFICATION
SPEAK = audio_tasks.TEXT_TO_AUDIO
BUILDERS = {CLASSIFY: build_tiny_audio_classifier, SPEAK: build_tiny_vits}


@functools.cache
def model_dir(task: str) -> Path:
    return cached_model(BUILDERS[task])


def local(task: str) -> Any:
    return in_process(task, model_dir(task))


def raw(clip: np.ndarray) -> audio_pb2.AudioInput:
    fmt = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=SAMPLING_RATE)
    return audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=clip.astype(np.float32).tobytes(), format=fmt))


def run(task: str, adapter: Any, requests: list[Any], items: int) -> Run:
    async def scenario() -> Run:
        async with Serving([spec(task, task, model_dir(task))]) as serving:
            return await serving.concurrently(task, adapter, requests, items=items)

    return asyncio.run(scenario())


def test_classification_batches_only_clips_of_equal_length() -> None:
    """Wav2Vec2-style extractors normalise over the padding and padded frames reach the model: one batch per
    length."""
    clips = [tiny_audio(seconds, seed=100 + i) for i, seconds in enumerate([1.0, 0.7, 1.0, 0.7])]
    requests = [audio_tasks_pb2.ClassifyAudioRequest(model=CLASSIFY, audios=[raw(c)]) for c in clips]
    result = run(CLASSIFY, audio_tasks.AUDIO_CLASSIFICATION_ADAPTER, requests, items=len(clips))
    for served, clip in zip(result.responses, clips, strict=True):
        expected = audio_tasks_pb2.ClassifyAudioResponse(
            results=[audio_tasks._label_scores(local(CLASSIFY)(clip.copy()))], model=CLASSIFY
        )
        assert_protos_close(served, expected)
    assert result.batches == collections.Counter({2: 2})
    assert result.pipeline_calls == 2


def test_text_to_audio_runs_every_text_alone() -> None:
    """Padded texts change VITS durations and a batch pads its audio: every text is synthesised alone, so each
    clip is exactly the in-process one."""
    texts = ["hello world", "a red car", "what is the date?"]
    requests = [
        audio_tasks_pb2.GenerateAudioRequest(model=SPEAK, texts=texts[:2]),
        audio_tasks_pb2.GenerateAudioRequest(model=SPEAK, texts=texts[2:]),
    ]
    result = run(SPEAK, audio_tasks.TEXT_TO_AUDIO_ADAPTER, requests, items=len(texts))
    served = [clip for r in result.responses for clip in r.results]
    assert served == [audio_tasks.generated_audio(local(SPEAK)(t)) for t in texts]
    assert result.batches == collections.Counter({1: 3})
    assert result.pipeline_calls == 3


def test_text_to_audio_refuses_empty_texts_and_too_many() -> None:
    async def scenario() -> None:
        specs = [spec(SPEAK, SPEAK, model_dir(SPEAK))]
        async with Serving(specs, limits=InputLimits(max_inputs_per_request=2)) as serving:
            adapter = audio_tasks.TEXT_TO_AUDIO_ADAPTER
            with pytest.raises(InvalidInput, match="^every text to synthesise must be non-empty$"):
                await serving.call(
                    adapter, audio_tasks_pb2.GenerateAudioRequest(model=SPEAK, texts=["hi", " "])
                )
            with pytest.raises(InvalidInput, match=r"^3 texts in one request; the server accepts at most 2 "):
                await serving.call(
                    adapter, audio_tasks_pb2.GenerateAudioRequest(model=SPEAK, texts=["a"] * 3)
                )
            assert serving.registry.find(SPEAK).scheduler.depth == 0

    asyncio.run(scenario())
