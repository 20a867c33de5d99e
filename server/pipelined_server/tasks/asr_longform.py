"""Long audio as a stream of final segments, each sent as soon as its window is decoded.

Whisper: the unary call's own computation, observed. The whole file runs through the pipeline exactly as
a unary long-form request does (one job alone on a worker: Whisper's sequential long-form decoding over
the whole file's log-mel features), and each window's segments are sent as soon as generate splits them.
So the stream equals the unary result (text and timestamps). Decoding each 30 s window as a separate
pipeline call does not: the window's features are computed from the window alone (another log-mel
normalisation and STFT edge, zero-audio padding) and the seek rule was re-implemented, which changed words
and timestamps at every seam (the issue: `(29.32, 30.32) ' at this space.'` streamed where the unary call
gave `(29.32, 35.76) ' And this spills over into...'`). The price: windows of concurrent streams no
longer batch together (unary long-form requests never did). A caller that leaves stops the decoding
at the next window.

Other models (CTC) have no timestamps to seek by: 30 s windows are cut at the quietest 100 ms of
their last 5 s, so a cut rarely lands inside a word.
"""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
from pipelined.v1 import speech_pb2

from ..errors import Cancelled, DeadlineExpired
from ..loading import run_batch
from ..registry import ModelInstance
from .asr import WHISPER, WHISPER_WINDOW_S, chunk_to_proto, model_kind, plan
from .durations import to_duration
from .worker_stream import Emit, Work, stream_from_worker

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


def _middle(word: dict[str, Any]) -> float:
    w_start, w_end = word["timestamp"]
    return float(w_start + (w_end if w_end is not None else w_start)) / 2


def _words_in(words: list[dict[str, Any]], start: float, end: float) -> list[dict[str, Any]]:
    return [w for w in words if start <= _middle(w) < end]


async def segment_stream(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], timeout: Timeout
) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
    if model_kind(instance) == WHISPER:
        stream = _whisper_segments(instance, samples, kwargs, timeout)
    else:
        stream = _windowed_segments(instance, samples, kwargs, timeout)
    async for response in stream:
        yield response


class _SegmentRelay:
    """Stands in for the model's `_retrieve_segment` (generate's split of one decoded window into
    segments): calls it, then hands the segments to the observer of the calling thread, if any. Installed
    once per model; replicas share the model, and each runs on its own worker thread."""

    def __init__(self, original: Callable[..., Any]) -> None:
        self.original = original
        self.local = threading.local()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        segments, offset = self.original(*args, **kwargs)
        observer = getattr(self.local, "observer", None)
        if observer is not None:
            observer(segments)
        return segments, offset


_relay_lock = threading.Lock()


def _relay(model: Any) -> _SegmentRelay:
    with _relay_lock:  # replicas share the model and may start their first stream together
        relay = model.__dict__.get("_retrieve_segment")
        if not isinstance(relay, _SegmentRelay):
            relay = _SegmentRelay(type(model)._retrieve_segment)
            model._retrieve_segment = relay
        return relay


class _WhisperObserver:
    """Turns the segments generate has produced so far into the pipeline's chunks (the postprocess the
    unary call ends with, so a prefix of segments gives a prefix of the final chunks) and emits the new
    ones, with their words when asked."""

    def __init__(
        self, pipe: Any, want_words: bool, emit: Emit, stop: threading.Event, deadline: float | None
    ) -> None:
        self.pipe = pipe
        self.want_words = want_words
        self.emit = emit
        self.stop = stop
        self.deadline = deadline
        self.segments: list[dict[str, Any]] = []
        self.sent = 0
        # Words are handed out by time: a segment takes those whose middle lies between the end of the
        # segment sent before it and its own end, and the last one takes the rest. Word and segment times
        # come from different sources (cross-attention alignment, timestamp tokens) and need not nest:
        # bounded by the segment's own start and end, words between two segments were dropped (issue 16:
        # 14 of the 23 words of the unary call on 35 s).
        self.words_from = float("-inf")

    def __call__(self, segments: list[dict[str, Any]]) -> None:
        # Raised inside generate: the worker is free at the next window, not at the end of the file.
        if self.stop.is_set():
            raise Cancelled("the caller left the stream")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise DeadlineExpired("the deadline passed while the file was being decoded")
        self.segments.extend(segments)
        self.send(*self.chunks(), final=False)

    def chunks(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        import torch
        from transformers.models.whisper.generation_whisper import _pad_to_max_length

        if not self.segments:
            return [], []
        pad = self.pipe.model.generation_config.pad_token_id
        tokens = _pad_to_max_length([self.segments], pad, "cpu", return_token_timestamps=self.want_words)
        sequences = tokens[0] if self.want_words else tokens
        out = self.pipe.postprocess([{"tokens": sequences, "is_last": True}], return_timestamps=True)
        if not self.want_words:
            return out.get("chunks") or [], []
        # Each segment's own token times, which generate has shifted by its window's offset: the result's
        # (what _pad_to_max_length gathers) are relative to their window, so every word after the first
        # 30 s came out up to 30 s early (and, partitioned by time, in the wrong segment or none).
        times = torch.cat([segment["token_timestamps"] for segment in self.segments])[None]
        words = self.pipe.postprocess(
            [{"tokens": sequences, "token_timestamps": times, "is_last": True}], return_timestamps="word"
        )
        return out.get("chunks") or [], words.get("chunks") or []

    def send(self, chunks: list[dict[str, Any]], words: list[dict[str, Any]], final: bool) -> None:
        # generate's segments are closed; an unclosed tail (none expected) waits for the end.
        ready = len(chunks)
        if not final and chunks and (chunks[-1]["timestamp"][1] is None or self.want_words):
            # With words, the newest segment also waits for the next one (or the end): words past its end
            # are its own unless another segment starts after them.
            ready -= 1
        for index in range(self.sent, ready):
            chunk = chunks[index]
            end = chunk["timestamp"][1]
            last = final and index == len(chunks) - 1
            upto = float("inf") if end is None or last else float(end)
            self.emit((chunk, _words_in(words, self.words_from, upto)))
            self.words_from = upto
        self.sent = max(self.sent, ready)


def _whisper_job(samples: np.ndarray, rate: int, kwargs: dict[str, Any], deadline: float | None) -> Work:
    want_words = kwargs.get("return_timestamps") == "word"
    # Segments need timestamps, whatever the length (plan() adds them only past 30 s).
    call = plan({**kwargs, "return_timestamps": "word" if want_words else True}, WHISPER, samples, rate)

    def work(pipe: Any, emit: Emit, stop: threading.Event) -> None:
        observer = _WhisperObserver(pipe, want_words, emit, stop, deadline)
        relay = _relay(pipe.model)
        relay.local.observer = observer
        try:
            # The unary call's very call (tasks/asr.py plan, loading.run_batch): same input, same arguments.
            output = run_batch(pipe, [samples], call.kwargs)[0]
        finally:
            relay.local.observer = None
        if want_words:
            observer.send(*observer.chunks(), final=True)
        else:
            # Audio up to 30 s is decoded short-form: the pipeline's chunks are the result.
            observer.send(output.get("chunks") or [], [], final=True)

    return work


async def _whisper_segments(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], timeout: Timeout
) -> AsyncIterator[speech_pb2.StreamingRecognizeFileResponse]:
    rate = instance.sampling_rate
    total_s = len(samples) / rate
    remaining = _before_window(timeout)
    deadline = None if remaining is None else time.monotonic() + remaining
    job = _whisper_job(samples, rate, kwargs, deadline)
    async for segment, words in stream_from_worker(instance, job, remaining):
        end = segment["timestamp"][1]
        processed = total_s if end is None else min(end, total_s)
        yield _response(segment, words, 0.0, processed, total_s, instance.name)


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
