"""Spare re-decodes (streaming/session.py, `streaming.idle_decode_interval_s`): a stream that left its
interval to the server decodes again after 0.5 s of new speech while the model is idle, at a priority
below every other work; a busy model, or a client that chose its interval, keeps the 1 s cadence."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from pipelined.v1 import audio_pb2, speech_pb2
from pipelined_server.audio import AudioLimits
from pipelined_server.config import InputLimits, ModelSpec, StreamingLimits
from pipelined_server.loading import load_pipeline
from pipelined_server.metrics import Metrics
from pipelined_server.registry import ModelInstance
from pipelined_server.streaming import session
from pipelined_server.streaming.options import stream_options
from stream_settings import plain_options

RATE = 16000


def _started(seconds_since_decode: float, idle: bool, idle_interval_s: float | None = 0.5) -> list[int]:
    """Priorities of the interim steps a stream starts with `seconds_since_decode` of new speech."""
    scheduler = SimpleNamespace(idle=idle, depth=0 if idle else 1)
    instance: Any = SimpleNamespace(name="m", sampling_rate=RATE, scheduler=scheduler)
    options = plain_options(idle_decode_interval_s=idle_interval_s)
    stream = session.StreamSession(instance, options, StreamingLimits(), AudioLimits(), Metrics())
    started: list[int] = []

    async def step(u: Any, end: int, priority: int) -> None:
        started.append(priority)

    stream._interim_step = step  # type: ignore[method-assign]

    async def scenario() -> None:
        decoded = 2 * RATE
        stream.buffer.append(np.zeros(decoded + int(seconds_since_decode * RATE), np.float32), 0.0)
        stream._start_interim(session.Utterance(0, 0, 0, decoded))
        if stream._interim is not None:
            await stream._interim

    asyncio.run(scenario())
    return started


def test_an_idle_model_decodes_again_after_half_a_second_below_every_other_work() -> None:
    assert _started(0.6, idle=True) == [session._SPARE_PRIORITY]
    assert session._SPARE_PRIORITY < 0  # what the scheduler times apart (spare_busy_s) and admission ignores
    assert _started(0.4, idle=True) == []


def test_a_busy_model_or_no_idle_interval_keeps_the_interval() -> None:
    assert _started(0.6, idle=False) == []
    assert _started(0.6, idle=True, idle_interval_s=None) == []
    assert _started(1.0, idle=True, idle_interval_s=None) == [0]


@pytest.mark.parametrize(
    ("chosen_s", "configured_s", "expected"), [(0.0, 0.5, 0.5), (2.0, 0.5, None), (0.0, None, None)]
)
def test_only_a_stream_that_left_its_interval_to_the_server_gets_spare_decodes(
    chosen_s: float, configured_s: float | None, expected: float | None, tiny_ctc_dir: Path
) -> None:
    fmt = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=RATE)
    config = speech_pb2.StreamingRecognitionConfig(audio_format=fmt)
    if chosen_s:
        config.min_decode_interval.FromSeconds(int(chosen_s))
    spec = ModelSpec(name="c", task="automatic-speech-recognition", source=str(tiny_ctc_dir))
    instance = ModelInstance(spec, pipeline=load_pipeline(spec).pipeline)
    limits = StreamingLimits(idle_decode_interval_s=configured_s)
    options = stream_options(config, instance, InputLimits(), limits)
    assert options.idle_decode_interval_s == expected
