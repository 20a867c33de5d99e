"""One decode step: a window of audio through the model's scheduler, and its output as timed words.

Steps use the same batching key as unary short Whisper clips (`asr.plan`), so the steps of concurrent
streams (and unary calls with the same arguments) share batches on the model's worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..registry import ModelInstance
from ..tasks import asr
from .agreement import Word


@dataclass(frozen=True)
class Hypothesis:
    """Words of a window, and where the window may be cut without splitting a word."""

    words: list[Word]
    # (number of words before the cut, cut time in seconds from the stream's start), in time order.
    cuts: list[tuple[int, float]]


async def decode_window(
    instance: ModelInstance, samples: np.ndarray, kwargs: dict[str, Any], priority: int = 0
) -> Any:
    assert instance.scheduler is not None
    call = asr.plan(kwargs, asr.model_kind(instance), samples, instance.sampling_rate)
    return await instance.scheduler.submit(
        samples, call.kwargs, key=call.key, batchable=call.batchable, priority=priority
    )


def hypothesis(output: dict[str, Any], offset_s: float, duration_s: float) -> Hypothesis:
    """Pipeline output (segment or word chunks, times from the window's start) -> words on the stream's clock.

    Segment chunks are split into words whose times are spread over the segment by length; every
    closed segment end is a cut. Word chunks carry their own times; every word end is a cut.
    """
    chunks = output.get("chunks") or []
    if not chunks and output.get("text", "").strip():
        chunks = [{"text": output["text"], "timestamp": (0.0, duration_s)}]
    words: list[Word] = []
    cuts: list[tuple[int, float]] = []
    for chunk in chunks:
        start, end = chunk.get("timestamp") or (None, None)
        if start is not None and start >= duration_s:
            # Words placed after the audio's end were not heard: Whisper, given padding after the audio
            # (whisper_context), may go on "transcribing" it.
            continue
        start = min(max(0.0, start or 0.0), duration_s)
        closed = end is not None
        end = min(max(start, end if end is not None else duration_s), duration_s)
        tokens = str(chunk.get("text", "")).split()
        if not tokens:
            continue
        total = sum(len(t) for t in tokens)
        at = start
        for token in tokens:
            span = (end - start) * len(token) / total
            words.append(Word(token, offset_s + at, offset_s + at + span))
            at += span
        if closed and end > 0:
            cuts.append((len(words), offset_s + end))
    return Hypothesis(words, cuts)


def with_prefix(forced: list[Word], output: dict[str, Any], offset_s: float, duration_s: float) -> Hypothesis:
    """A forced decode's hypothesis (tasks/whisper_prefix.py): the forced words, then what it generated.

    The alignment gives the first generated word no start of its own (it begins where the window does):
    it starts where the forced words end. Generated text that does not begin with a space ends the last
    forced word ("cut" + "ters": an interim stopped inside a word, and that part is final already): it is
    left out. Every forced word's end is a cut, as every word end is.
    """
    new = hypothesis(output, offset_s, duration_s)
    if not forced:
        return new
    chunks = output.get("chunks") or []
    text = str(chunks[0].get("text", "")) if chunks else str(output.get("text", ""))
    skip = 1 if new.words and text[:1] not in ("", " ") else 0
    floor = forced[-1].end
    words = list(forced)
    for w in new.words[skip:]:
        start = max(w.start, floor)
        words.append(Word(w.text, start, max(w.end, start)))
        floor = start
    shift = len(forced) - skip
    cuts = [(k + 1, w.end) for k, w in enumerate(forced)]
    cuts += [(k + shift, max(t, forced[-1].end)) for k, t in new.cuts if k > skip]
    return Hypothesis(words, cuts)
