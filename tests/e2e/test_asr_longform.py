"""Whisper's seek rule for streamed long-form decoding, and the quiet cut for models without timestamps."""

from __future__ import annotations

import numpy as np
from pipelined_server.tasks.asr_longform import commit_window, quiet_cut


def seg(text: str, start: float, end: float | None) -> dict:
    return {"text": text, "timestamp": (start, end)}


def test_closed_window_moves_on_by_the_whole_window() -> None:
    commit = commit_window([seg(" a", 0.0, 4.0), seg(" b", 4.0, 9.5)], 30.0, is_last=False)
    assert [s["text"] for s in commit.segments] == [" a", " b"] and commit.advance_s == 30.0


def test_unclosed_last_segment_is_decoded_again_from_its_start() -> None:
    commit = commit_window([seg(" a", 0.0, 4.0), seg(" b", 27.2, None)], 30.0, is_last=False)
    assert [s["text"] for s in commit.segments] == [" a"] and commit.advance_s == 27.2


def test_last_window_or_single_unclosed_segment_is_kept_and_closed() -> None:
    last = commit_window([seg(" a", 0.0, 4.0), seg(" b", 6.0, None)], 12.5, is_last=True)
    assert last.segments[-1]["timestamp"] == (6.0, 12.5) and last.advance_s == 12.5
    whole = commit_window([seg(" a", 0.0, None)], 30.0, is_last=False)
    assert whole.segments[0]["timestamp"] == (0.0, 30.0) and whole.advance_s == 30.0


def test_silence_moves_on_and_reversed_timestamps_are_ordered() -> None:
    assert commit_window([], 30.0, is_last=False).advance_s == 30.0
    commit = commit_window([seg(" a", 3.0, 2.7)], 30.0, is_last=False)
    assert commit.segments[0]["timestamp"] == (3.0, 3.0)


def test_quiet_cut_lands_in_the_pause() -> None:
    rate = 1000
    audio = np.ones(60 * rate, np.float32)
    audio[27_000:27_400] = 0.0
    cut = quiet_cut(audio, 0, 30 * rate, rate)
    assert 27_000 <= cut <= 27_400
    assert quiet_cut(audio, 40 * rate, 30 * rate, rate) == len(audio)
