"""Long audio as a stream of final segments, each sent as soon as its window is decoded.

Whisper: Whisper's own sequential long-form algorithm, window by window (the method that keeps every
word; the pipeline's `chunk_length_s` stitching drops words at seams). A window's closed segments are
final; an unclosed last segment is decoded again at the start of the next window, which begins where
that segment began. A window that ends closed moves on by the whole window, as Whisper does. Each window
is one scheduler item, so the windows of concurrent requests batch together.

Other models (CTC) have no timestamps to seek by: 30 s windows are cut at the quietest 100 ms of
their last 5 s, so a cut rarely lands inside a word.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipelined.v1 import speech_pb2

from ..errors import DeadlineExpired
from ..registry import ModelInstance
from .asr import WHISPER, WHISPER_WINDOW_S, chunk_to_proto, model_kind
from .durations import to_duration

# Remaining seconds of the caller's deadline, asked afresh before each window.
Timeout = Callable[[], float | None]


def _before_window(timeout: Timeout) -> float | None:
    """The deadline left for the next window; none left ends the stream here, between windows (a caller
    that cancels ends it too: the window it waits on stops at its next token, batching/abandon.py)."""
    remaining = timeout()
    if remaining is not None and remaining <= 0:
        raise DeadlineExpired("deadline passed between windows; the segments so far were sent")
    return remaining


_CUT_SEARCH_S = 5.0
_CUT_FRAME_S = 0.1


@dataclass(frozen=True)
class WindowCommit:
    """What one decoded window makes final, relative to the window's start."""

    segments: list[dict[str, Any]]
    advance_s: float


def _ordered(chunk: dict[str, Any]) -> dict[str, Any]:
    """A segment never ends before it starts (a weak model can emit timestamps out of order)."""
    start, end = chunk["timestamp"]
    if start is not None and end is not None and end < start:
        return {**chunk, "timestamp": (start, start)}
    return chunk


def commit_window(chunks: list[dict[str, Any]], window_s: float, is_last: bool) -> WindowCommit:
    """Applies Whisper's seek rule to a window's segment chunks."""
    chunks = [_ordered(c) for c in chunks]
    if not chunks:
        return WindowCommit([], window_s)
    last_start, last_end = chunks[-1]["timestamp"]
    if last_end is not None:
        return WindowCommit(list(chunks), window_s)
    closed = {**chunks[-1], "timestamp": (last_start, window_s)}
    if is_last or not last_start:
        # Nothing earlier to fall back to (or no audio after it): keep it, closed at the window's end.
        return WindowCommit([*chunks[:-1], closed], window_s)
    return WindowCommit(list(chunks[:-1]), float(last_start))


def quiet_cut(samples: np.ndarray, start: int, window: int, rate: int) -> int:
    """End of a window starting at `start`: the quietest frame in its last seconds, or the audio's end."""
    end = start + window
    if end >= len(samples):
        return len(samples)
    frame = max(1, int(_CUT_FRAME_S * rate))
    search_from = max(start + frame, end - int(_CUT_SEARCH_S * rate))
    region = samples[search_from:end]
    frames = len(region) // frame
    if frames == 0:
        return end
    energy = (region[: frames * frame].reshape(frames, frame) ** 2).mean(axis=1)
    quietest = int(np.argmin(energy))
    return search_from + quietest * frame + frame // 2


def _response(
    segment: dict[str, Any],
    words: list[dict[str, Any]],
    offset_s: float,
    processed_s: float,
    total_s: float,
    model: str,
) -> speech_pb2.StreamingRecognizeFileResponse:
    return speech_pb2.StreamingRecognizeFileResponse(
        segment=chunk_to_proto(segment, offset_s),
        words=[chunk_to_proto(w, offset_s) for w in words],
        audio_processed=to_duration(processed_s),
        audio_duration=to_duration(total_s),
        model=model,
    )


def _words_in(words: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    def middle(word: dict[str, Any]) -> float:
        w_start, w_end = word["timestamp"]
        return (w_start + (w_end if w_end is not None else w_start)) / 2

    return [w for w in words if start <= middle(w) < end]


async def segment_stream(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], timeout: Timeout
) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
    if model_kind(instance) == WHISPER:
        stream = _whisper_segments(instance, samples, kwargs, timeout)
    else:
        stream = _windowed_segments(instance, samples, kwargs, timeout)
    async for response in stream:
        yield response


async def _whisper_segments(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], timeout: Timeout
) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
    assert instance.scheduler is not None
    rate = instance.sampling_rate
    total_s = len(samples) / rate
    window = int(WHISPER_WINDOW_S * rate)
    generate = {k: v for k, v in kwargs.items() if k == "generate_kwargs"}
    want_words = kwargs.get("return_timestamps") == "word"
    seek = 0
    while seek < len(samples):
        piece = samples[seek : seek + window]
        is_last = seek + window >= len(samples)
        output = await instance.scheduler.submit(
            piece, {"return_timestamps": True, **generate}, key="whisper", timeout=_before_window(timeout)
        )
        commit = commit_window(output.get("chunks") or [], len(piece) / rate, is_last)
        words: list[dict[str, Any]] = []
        if want_words and commit.segments:
            committed = piece[: int(round(commit.advance_s * rate))]
            word_output = await instance.scheduler.submit(
                committed,
                {"return_timestamps": "word", **generate},
                key="whisper",
                timeout=_before_window(timeout),
            )
            words = word_output.get("chunks") or []
        offset_s = seek / rate
        seek = min(len(samples), seek + max(1, int(round(commit.advance_s * rate))))
        for segment in commit.segments:
            start, end = segment["timestamp"]
            seg_words = _words_in(words, start, end) if want_words else []
            yield _response(
                segment, seg_words, offset_s, min(offset_s + end, total_s), total_s, instance.name
            )


async def _windowed_segments(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], timeout: Timeout
) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
    assert instance.scheduler is not None
    rate = instance.sampling_rate
    total_s = len(samples) / rate
    call = {k: v for k, v in kwargs.items() if k in ("return_timestamps", "generate_kwargs")}
    start = 0
    while start < len(samples):
        end = quiet_cut(samples, start, int(WHISPER_WINDOW_S * rate), rate)
        piece = samples[start:end]
        output = await instance.scheduler.submit(
            piece, call, key=("samples", len(piece)), timeout=_before_window(timeout)
        )
        text = output.get("text", "")
        if text.strip():
            segment = {"text": text, "timestamp": (0.0, len(piece) / rate)}
            yield _response(
                segment, output.get("chunks") or [], start / rate, end / rate, total_s, instance.name
            )
        start = end
