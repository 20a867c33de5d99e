"""A pause decode (streaming/session.py): the words it heard before the pause are final from that decode."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import numpy as np
from pipelined_server.audio import AudioLimits
from pipelined_server.config import StreamingLimits
from pipelined_server.metrics import Metrics
from pipelined_server.streaming import session
from pipelined_server.streaming.agreement import Word
from pipelined_server.streaming.decode import Hypothesis
from stream_settings import plain_options

RATE = 16000
PAD_S = 0.2


def _session(words: list[Word]) -> session.StreamSession:
    options = plain_options(padding_s=PAD_S)
    instance: Any = SimpleNamespace(name="m", sampling_rate=RATE, scheduler=None)
    stream = session.StreamSession(instance, options, StreamingLimits(), AudioLimits(), Metrics())
    stream.buffer.append(np.zeros(3 * RATE, np.float32), 0.0)

    async def decoded(u: Any, end: int, priority: int = 0, interim: bool = False) -> Hypothesis:
        return Hypothesis(words, [(k + 1, w.end) for k, w in enumerate(words)])

    stream._hypothesis = decoded  # type: ignore[method-assign]
    return stream


def _decode(stream: session.StreamSession, end_s: float, priority: int) -> list[str]:
    u = session.Utterance(0, 0, 0, 0)
    asyncio.run(stream._interim_step(u, int(end_s * RATE), priority))
    return [w.text for w in u.agreement.committed]


def test_a_pause_decode_makes_the_words_before_the_pause_final_at_once() -> None:
    words = [Word("and", 0.1, 0.4), Word("so", 0.5, 0.9), Word("americans", 1.0, 1.55)]
    pause_s = 1.6  # the decode runs up to the pause plus the padding
    assert _decode(_session(words), pause_s + PAD_S, session._FINAL_PRIORITY) == ["and", "so", "americans"]
    # The same hypothesis from a periodic re-decode (the first of its window): nothing agreed, nothing final.
    assert _decode(_session(words), pause_s + PAD_S, 0) == []


def test_a_word_reaching_past_the_pause_start_waits() -> None:
    # Its end lies in the padding after the pause began: it may be a word cut short, so it stays interim,
    # and so does everything after it.
    words = [Word("ask", 0.1, 0.5), Word("not", 0.6, 1.7), Word("what", 1.75, 1.78)]
    assert _decode(_session(words), 1.6 + PAD_S, session._FINAL_PRIORITY) == ["ask"]
