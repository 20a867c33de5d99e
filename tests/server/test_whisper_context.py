"""Live-stream decodes encode their window plus a margin instead of Whisper's padded 30 s (tasks/whisper_context.py);
every other call keeps the full window, so unary results stay equal to the local pipeline's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline, run_batch
from pipelined_server.sources.embedded import is_available, materialize
from pipelined_server.tasks import whisper_context
from wer import wer

RATE = 16000


def _spy_encoder(pipe: Any) -> list[tuple[int, int]]:
    """(mel frames in, encoder frames out) of every encoder call of `pipe`."""
    seen: list[tuple[int, int]] = []
    encoder = pipe.model.model.encoder
    installed = encoder.forward

    def spy(input_features: Any, attention_mask: Any = None, **kwargs: Any) -> Any:
        out = installed(input_features, attention_mask=attention_mask, **kwargs)
        seen.append((input_features.shape[-1], out.last_hidden_state.shape[1]))
        return out

    encoder.forward = spy
    return seen


def test_frames_to_keep_rounds_up_to_whole_seconds_within_the_window() -> None:
    assert whisper_context.frames_to_keep(250, 2.0, 3000) == 500  # 2.5 s + 2 s -> 5 s
    assert whisper_context.frames_to_keep(300, 2.0, 3000) == 500
    assert whisper_context.frames_to_keep(301, 2.0, 3000) == 600
    assert whisper_context.frames_to_keep(0, 0.0, 3000) == 100  # never an empty encoder input
    assert whisper_context.frames_to_keep(2900, 2.0, 3000) == 3000  # never past Whisper's window


def test_only_calls_with_the_margin_are_trimmed(tiny_whisper_dir: Path) -> None:
    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    )
    seen = _spy_encoder(loaded.pipeline)
    clips = [np.random.default_rng(0).normal(0, 0.1, int(s * RATE)).astype(np.float32) for s in (1.5, 3.2)]

    full = run_batch(loaded.pipeline, clips, {"return_timestamps": "word"})
    assert seen and set(seen) == {(3000, 1500)}
    seen.clear()
    trimmed = run_batch(loaded.pipeline, clips, {"return_timestamps": "word", whisper_context.KWARG: 2.0})
    # An encoder call keeps its longest item plus 2 s, rounded up to whole seconds, of mel frames (1.5 s -> 4 s,
    # 3.2 s -> 6 s), and puts out half as many frames.
    assert set(seen) <= {(3000, 200), (3000, 300)} and max(seen) == (3000, 300)
    assert [set(o) for o in trimmed] == [set(o) for o in full]
    # The setting ends with the call: the next call without the margin sees the whole window again.
    seen.clear()
    run_batch(loaded.pipeline, clips[:1], {"return_timestamps": "word"})
    assert seen and set(seen) == {(3000, 1500)}


@pytest.mark.skipif(
    not is_available("whisper-tiny.en"), reason="the whisper-tiny.en weights package is not installed"
)
def test_trimmed_decodes_of_real_speech_match_the_full_window() -> None:
    from paths import TRANSCRIBED_CLIPS, shared_file
    from pipelined_server.audio import decode_encoded

    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize("whisper-tiny.en")))
    )
    clips = [decode_encoded(shared_file(c).read_bytes(), RATE) for c in TRANSCRIBED_CLIPS]
    kwargs: dict[str, Any] = {"return_timestamps": "word"}
    full = " ".join(run_batch(loaded.pipeline, [c], kwargs)[0]["text"] for c in clips)
    trimmed = " ".join(
        run_batch(loaded.pipeline, [c], {**kwargs, whisper_context.KWARG: 8.0})[0]["text"] for c in clips
    )
    # The stream default margin (8 s): the whole clips decode to (almost) the same words as in 30 s.
    assert wer(full, trimmed) <= 0.05, (full, trimmed)


def test_words_placed_after_the_windows_audio_are_dropped() -> None:
    """Given padding after a stream window's audio, Whisper may go on "transcribing" it: a word starting at or
    after the audio's end was not heard and must not become a (final) word of the stream."""
    from pipelined_server.streaming.decode import hypothesis

    output = {
        "text": " one two two two",
        "chunks": [
            {"text": " one", "timestamp": (0.2, 0.6)},
            {"text": " two", "timestamp": (0.7, 1.4)},
            {"text": " two", "timestamp": (1.5, 1.9)},  # the window holds 1.5 s of audio
            {"text": " two", "timestamp": (2.0, 2.3)},
        ],
    }
    heard = hypothesis(output, offset_s=10.0, duration_s=1.5)
    assert [(w.text, w.start) for w in heard.words] == [("one", 10.2), ("two", 10.7)]
    assert heard.cuts == [(1, 10.6), (2, 11.4)]
