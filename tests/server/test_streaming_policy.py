"""The commit rule, the rolling buffer and the speech detector, on their own."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from paths import shared_file
from pipelined_server.streaming.agreement import LocalAgreement, Word
from pipelined_server.streaming.buffer import RollingBuffer
from pipelined_server.streaming.decode import hypothesis
from pipelined_server.streaming.vad import SpeechDetector


def words(text: str, start: float = 0.0) -> list[Word]:
    return [Word(w, start + i * 0.5, start + i * 0.5 + 0.4) for i, w in enumerate(text.split())]


def test_local_agreement_commits_what_two_hypotheses_share() -> None:
    policy = LocalAgreement()
    assert policy.update(words("and so")) == ([], words("and so"))
    final, tail = policy.update(words("and so my fellow"))
    assert [w.text for w in final] == ["and", "so"] and [w.text for w in tail] == ["my", "fellow"]
    # Case and punctuation changes do not block agreement; the committed part may be reworded.
    final, tail = policy.update(words("And so, my fellow Americans"))
    assert [w.text for w in final] == ["my", "fellow"] and [w.text for w in tail] == ["Americans"]
    assert [w.text for w in policy.finish(words("and so my fellow Americans ask"))] == ["Americans", "ask"]


def test_finals_are_never_repeated_when_the_hypothesis_rewords_the_past() -> None:
    policy = LocalAgreement()
    policy.update(words("the quick brown"))
    policy.update(words("the quick brown fox"))  # commits the quick brown
    rest = policy.finish(words("a quick brown fox jumps"))
    assert [w.text for w in rest] == ["fox", "jumps"]


def test_keep_after_forgets_words_before_the_new_window() -> None:
    policy = LocalAgreement(committed=words("one two three four"))
    policy.keep_after(1.0)
    assert [w.text for w in policy.committed] == ["three", "four"]


def test_segment_output_becomes_timed_words_and_cuts() -> None:
    output = {
        "chunks": [
            {"text": " Hello big", "timestamp": (0.0, 1.0)},
            {"text": " world", "timestamp": (1.0, None)},
        ]
    }
    hyp = hypothesis(output, offset_s=10.0, duration_s=2.0)
    assert [w.text for w in hyp.words] == ["Hello", "big", "world"]
    assert hyp.words[0].start == 10.0 and hyp.words[1].end == 11.0 and hyp.words[2].end == 12.0
    assert hyp.cuts == [(2, 11.0)]  # the open last segment is no cut


def test_rolling_buffer_addresses_absolute_samples_and_trims() -> None:
    buffer = RollingBuffer()
    for i in range(10):
        buffer.append(np.full(100, i, np.float32), arrived=float(i))
    buffer.trim(450)
    assert buffer.start == 450 and buffer.end == 1000 and buffer.held == 550
    assert buffer.slice(400, 520).tolist() == [4.0] * 50 + [5.0] * 20
    assert buffer.arrival_of(1000) == 9.0 and buffer.arrival_of(501) == 5.0


def test_a_pause_is_seen_where_the_speech_end_is_later_declared() -> None:
    """The session decodes up to a pause at once (final priority) so the final can reuse that decode:
    this holds only if the pause starts exactly where the end of speech is declared `min_silence` later."""
    from pipelined_server.audio import decode_encoded

    audio = decode_encoded(Path(shared_file("audio/jfk.flac")).read_bytes(), 16000)
    detector = SpeechDetector(16000, 0.5, 0.5)
    pauses: set[int] = set()
    ends = []
    for i in range(0, len(audio), 1600):
        for event in detector.push(audio[i : i + 1600]):
            if not event.started:
                ends.append(event.sample)
        if detector.pause_from is not None:
            pauses.add(detector.pause_from)
    assert len(ends) >= 2, "jfk.flac has pauses between its sentences"
    assert set(ends) <= pauses
