"""The ASR adapter's batching rule (tasks/asr.py `plan`) through the real scheduler and pipelines: concurrent
clips that could share a batch are queued together, then each response must equal the in-process pipeline's
unbatched result, and the batch sizes in the metrics must be those the rule claims. Fast (no server, the
tiny models cached on disk): the `asr` mutation group runs this file per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from model_cache import cached_model
from pipelined.v1 import audio_pb2, speech_pb2
from pipelined_server.streaming.decode import decode_window
from pipelined_server.tasks import asr
from pipelined_server.tasks.asr_longform import segment_stream
from serving import Run, Serving, spec
from tiny_models import SAMPLING_RATE, build_tiny_wav2vec2_ctc, build_tiny_whisper, tiny_audio

pytestmark = pytest.mark.timeout(120)

ASR = "automatic-speech-recognition"
WHISPER_KWARGS: dict[str, Any] = {"num_beams": 1}
WORD = speech_pb2.TIMESTAMP_GRANULARITY_WORD


@functools.cache
def whisper_dir() -> Path:
    return cached_model(build_tiny_whisper)


@functools.cache
def ctc_dir() -> Path:
    return cached_model(build_tiny_wav2vec2_ctc)


@functools.cache
def local(model: str) -> Any:
    import transformers

    if model == "whisper":
        return transformers.pipeline(ASR, model=str(whisper_dir()), **WHISPER_KWARGS)
    return transformers.pipeline(ASR, model=str(ctc_dir()))


def request(
    model: str, clip: np.ndarray, timestamps: int = 0, **clip_config: Any
) -> speech_pb2.RecognizeRequest:
    raw = audio_pb2.RawAudio(
        data=clip.astype(np.float32).tobytes(),
        format=audio_pb2.RawAudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=SAMPLING_RATE
        ),
    )
    return speech_pb2.RecognizeRequest(
        audio=audio_pb2.AudioInput(raw=raw),
        config=speech_pb2.ClipRecognitionConfig(
            config=speech_pb2.RecognitionConfig(model=f"tiny-{model}", timestamps=timestamps), **clip_config
        ),
    )


def expected(model: str, clip: np.ndarray, **kwargs: Any) -> speech_pb2.RecognizeResponse:
    """The unbatched in-process result as the adapter answers it (chunks only where they were asked)."""
    return asr.response_from_output(local(model)(clip.copy(), **kwargs), f"tiny-{model}", kwargs)


async def stream_file(instance: Any, audio: np.ndarray) -> list[speech_pb2.StreamingRecognizeFileResponse]:
    return [r async for r in segment_stream(instance, audio, {}, lambda: None)]


def run(
    model: str,
    requests: list[speech_pb2.RecognizeRequest],
    steps: Sequence[tuple[np.ndarray, dict[str, Any]]] = (),
    files: Sequence[np.ndarray] = (),
    dtype: str = "auto",
) -> Run:
    """The requests, live-stream decode steps of (window, arguments) and file streams (audio up to 30 s:
    one window each), run concurrently; a file stream's result is the list of its responses."""

    async def scenario() -> Run:
        if model == "whisper":
            served = spec("tiny-whisper", ASR, whisper_dir(), pipeline_kwargs=WHISPER_KWARGS, dtype=dtype)
        else:
            served = spec("tiny-ctc", ASR, ctc_dir())
        async with Serving([served]) as serving:
            instance = serving.registry.find(f"tiny-{model}")
            others = [functools.partial(decode_window, instance, window, kwargs) for window, kwargs in steps]
            others += [functools.partial(stream_file, instance, audio) for audio in files]
            items = len(requests) + len(steps) + len(files)
            return await serving.concurrently(instance.name, asr.ADAPTER, requests, items, others)

    return asyncio.run(scenario())


def test_ctc_batches_only_clips_of_equal_length() -> None:
    """CTC features are normalised over the padding and padded frames are decoded: two lengths, two batches."""
    clips = [tiny_audio(seconds, seed=40 + i) for i, seconds in enumerate([2.0, 3.0, 2.0, 3.0])]
    result = run("ctc", [request("ctc", c) for c in clips])
    assert result.responses == [expected("ctc", c) for c in clips]
    assert result.batches == collections.Counter({2: 2})
    assert result.pipeline_calls == 2


def test_whisper_batches_windows_of_any_length() -> None:
    """Whisper pads every clip to its 30 s window: clips up to exactly 30 s share one batch."""
    clips = [tiny_audio(seconds, seed=50 + i) for i, seconds in enumerate([2.0, 3.5, 30.0, 5.0])]
    assert len(clips[2]) == 30 * SAMPLING_RATE
    result = run("whisper", [request("whisper", c) for c in clips])
    assert result.responses == [expected("whisper", c) for c in clips]
    assert result.batches == collections.Counter({4: 1})
    assert result.pipeline_calls == 1


def test_int8_whisper_never_batches() -> None:
    """int8 scales activations over the whole batch (registry.batching_for): clips and live-stream steps
    that float32 runs in one batch run one by one, each equal to its unbatched in-process int8 result."""
    from pipelined_server.loading import load_pipeline

    clips = [tiny_audio(seconds, seed=90 + i) for i, seconds in enumerate([2.0, 3.5, 5.0])]
    window = tiny_audio(2.5, seed=95)
    result = run("whisper", [request("whisper", c) for c in clips], steps=[(window, {})], dtype="int8")
    assert result.batches == collections.Counter({1: 4})
    assert result.pipeline_calls == 4
    served = spec("tiny-whisper", ASR, whisper_dir(), pipeline_kwargs=WHISPER_KWARGS, dtype="int8")
    alone = load_pipeline(served).pipeline
    responses = [asr.response_from_output(alone(c.copy()), "tiny-whisper", {}) for c in clips]
    assert result.responses[:3] == responses
    assert result.responses[3] == alone(window.copy())


def test_whisper_language_detection_runs_alone() -> None:
    """Batched, language detection fails and is retried item by item (equal outputs): count the calls."""
    clips = [tiny_audio(seconds, seed=60 + i) for i, seconds in enumerate([2.0, 2.0])]
    result = run("whisper", [request("whisper", c, return_language=True) for c in clips])
    assert result.responses == [expected("whisper", c, return_language=True) for c in clips]
    assert result.batches == collections.Counter({1: 2})
    assert result.pipeline_calls == 2


def test_whisper_long_form_runs_alone_with_timestamps() -> None:
    """Clips over 30 s decode sequentially, alone, with the timestamp tokens long-form decoding needs (and
    the answer leaves out chunks nobody asked for); asked word timestamps stay word timestamps."""
    clips = [tiny_audio(31.0, seed=70), tiny_audio(31.0, seed=71), tiny_audio(33.0, seed=72)]
    requests = [
        request("whisper", clips[0]),
        request("whisper", clips[1]),
        request("whisper", clips[2], WORD),
    ]
    result = run("whisper", requests)
    plain = [
        asr.response_from_output(local("whisper")(c.copy(), return_timestamps=True), "tiny-whisper", {})
        for c in clips[:2]
    ]
    assert result.responses == [*plain, expected("whisper", clips[2], return_timestamps="word")]
    assert all(not r.chunks for r in result.responses[:2]) and result.responses[2].chunks
    assert result.batches == collections.Counter({1: 3})
    assert result.pipeline_calls == 3


def test_whisper_chunked_long_clips_share_a_batch() -> None:
    """With chunk_length the pipeline cuts long clips into 30 s windows itself: they batch like short ones."""
    clips = [tiny_audio(40.0, seed=80), tiny_audio(36.0, seed=81)]
    chunk = Duration(seconds=30)
    result = run("whisper", [request("whisper", c, chunk_length=chunk) for c in clips])
    assert result.responses == [expected("whisper", c, chunk_length_s=30.0) for c in clips]
    assert result.batches == collections.Counter({2: 1})
    assert result.pipeline_calls == 1


@pytest.mark.parametrize(
    ("model", "timestamps", "kwargs"),
    [
        ("whisper", speech_pb2.TIMESTAMP_GRANULARITY_SEGMENT, {"return_timestamps": True}),
        ("ctc", WORD, {"return_timestamps": "word"}),
    ],
)
def test_live_stream_steps_batch_with_unary_clips(
    model: str, timestamps: int, kwargs: dict[str, Any]
) -> None:
    """A live stream's decode step (streaming/decode.py) takes the unary rule and arguments: a window and a
    clip of the same arguments (and, for CTC, the same length) share a batch, each equal to its lone result."""
    clip, window = tiny_audio(2.0, seed=85), tiny_audio(2.0, seed=86)
    result = run(model, [request(model, clip, timestamps)], steps=[(window, kwargs)])
    assert result.responses[0] == expected(model, clip, **kwargs)
    assert result.responses[1] == local(model)(window.copy(), **kwargs)
    assert result.batches == collections.Counter({2: 1})
    assert result.pipeline_calls == 1


def test_ctc_file_stream_windows_batch_with_unary_clips_of_equal_length() -> None:
    """stream_file on a CTC model queues its windows under the unary key (tasks/asr_longform.py): a window
    and a clip of the same length share a batch; another length does not."""
    clip, same, other = tiny_audio(2.0, seed=87), tiny_audio(2.0, seed=88), tiny_audio(2.5, seed=89)
    result = run("ctc", [request("ctc", clip)], files=[same, other])
    assert result.responses[0] == expected("ctc", clip)
    for streamed, audio in zip(result.responses[1:], [same, other], strict=True):
        assert [r.segment.text for r in streamed] == [local("ctc")(audio.copy())["text"]]
    assert result.batches == collections.Counter({2: 1, 1: 1})
    assert result.pipeline_calls == 2
