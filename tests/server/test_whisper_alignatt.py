"""Interim live-stream decodes stop before words they may not have fully heard (tasks/whisper_alignatt.py);
every other call decodes as before, so unary results stay equal to the local pipeline's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline, run_batch
from pipelined_server.sources.embedded import is_available, materialize
from pipelined_server.streaming.agreement import normalize
from pipelined_server.tasks import whisper_alignatt, whisper_context

RATE = 16000
EOS = 7


def _attention(*peaks: int, frames: int = 400) -> dict[int, torch.Tensor]:
    """What the hooks capture: per alignment layer, the newest token's weights summed over its heads."""
    attention = torch.zeros(len(peaks), frames)
    for row, peak in enumerate(peaks):
        attention[row, peak] = 1.0
    return {2: attention * 0.6, 3: attention * 0.4}


def test_a_row_ends_once_its_newest_token_looks_at_the_last_frames() -> None:
    # Two items of 100 and 300 encoder frames (2 s and 6 s), stopping 25 frames (0.5 s) before each end.
    stop = whisper_alignatt._stop_processor(torch.tensor([100, 300]), 25, EOS)
    scores = torch.zeros(2, 10)
    prompt = torch.zeros(2, 1, dtype=torch.long)
    # The first steps never stop, wherever they look (Whisper's first word often looks at the padding).
    for step in range(whisper_alignatt._FREE_TOKENS):
        whisper_alignatt._state.attention = _attention(99, 299)
        ids = torch.zeros(2, 1 + step, dtype=torch.long)
        assert torch.equal(stop(ids if step else prompt, scores), scores)
    ids = torch.zeros(2, 1 + whisper_alignatt._FREE_TOKENS, dtype=torch.long)
    # Frame 75 is the first of the first item's last 25; the second item looks well before its own end.
    whisper_alignatt._state.attention = _attention(75, 274)
    out = stop(ids, scores)
    assert out[0, EOS] == 0 and torch.isinf(out[0]).sum() == 9  # end-of-text only
    assert torch.equal(out[1], scores[1])
    assert whisper_alignatt._state.attention == {}  # consumed: the next step reads its own
    whisper_alignatt._state.attention = _attention(74, 275)
    out = stop(ids, scores)
    assert torch.equal(out[0], scores[0]) and out[1, EOS] == 0 and torch.isinf(out[1]).sum() == 9
    # A step whose attention nobody captured (outside `stopping()`) leaves the scores alone.
    assert torch.equal(stop(ids, scores), scores)
    # A row that generated more than its audio could hold (8 tokens per second + 10: 26 for 2 s, 58 for
    # 6 s) ends wherever it looks: a loop the stop missed.
    for generated, ended in ((25, [False, False]), (26, [True, False]), (58, [True, True])):
        whisper_alignatt._state.attention = _attention(10, 10)
        out = stop(torch.zeros(2, 1 + generated, dtype=torch.long), scores)
        assert [bool(out[row, 0] == float("-inf")) for row in (0, 1)] == ended


def test_only_calls_with_the_stop_end_early(tiny_whisper_dir: Path) -> None:
    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    )
    clip = np.random.default_rng(0).normal(0, 0.1, int(3.0 * RATE)).astype(np.float32)
    kwargs: dict[str, Any] = {"return_timestamps": "word", whisper_context.KWARG: 1.0}
    full = run_batch(loaded.pipeline, [clip], kwargs)[0]
    # The tiny model's alignment heads look near the start of the audio (frame 7 of 150) whatever the text,
    # so only a stop covering nearly the whole clip reaches them: the text ends after the free steps.
    stopped = run_batch(loaded.pipeline, [clip], {**kwargs, whisper_alignatt.KWARG: 2.9})[0]
    assert 0 < len(stopped["chunks"]) < len(full["chunks"])
    assert stopped["text"].split() == full["text"].split()[: len(stopped["text"].split())]
    # A stop they never reach changes nothing.
    assert run_batch(loaded.pipeline, [clip], {**kwargs, whisper_alignatt.KWARG: 0.5})[0] == full
    # The setting ends with the call.
    assert run_batch(loaded.pipeline, [clip], kwargs)[0] == full


@pytest.mark.skipif(
    not is_available("whisper-tiny.en"), reason="the whisper-tiny.en weights package is not installed"
)
def test_interim_windows_of_real_speech_keep_their_heard_words_and_do_not_loop() -> None:
    from paths import shared_file
    from pipelined_server.audio import decode_encoded

    loaded = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize("whisper-tiny.en")))
    )
    speech = np.concatenate(
        [decode_encoded(shared_file(f"audio/LJ001-000{i}.wav").read_bytes(), RATE) for i in (1, 2)]
    )
    # Windows cut wherever a live stream's would be: mid-word, 2-5 s long.
    windows = [
        speech[int(s * RATE) : int((s + n) * RATE)] for s, n in ((0, 2.0), (1.3, 3.5), (4.1, 5.0), (6.6, 2.7))
    ]
    words = {"return_timestamps": "word"}

    def decode(window: np.ndarray, extra: dict[str, Any]) -> list[dict[str, Any]]:
        return list(run_batch(loaded.pipeline, [window], {**words, **extra})[0]["chunks"])

    missed = heard = repeated = looped = 0
    for window in windows:
        end_s = len(window) / RATE
        full = decode(window, {})  # Whisper's own 30 s window
        interim = decode(window, {whisper_context.KWARG: 1.0, whisper_alignatt.KWARG: 0.5})
        unguarded = decode(window, {whisper_context.KWARG: 1.0})
        stable = [normalize(c["text"]) for c in full if c["timestamp"][1] <= end_s - 1.0]
        got = [normalize(c["text"]) for c in interim]
        heard += len(stable)
        missed += sum(1 for w in stable if w not in got)
        repeated += max(0, len(interim) - len(full))
        looped += max(0, len(unguarded) - len(full))
    # The words heard well before the cut are there; nothing is repeated at the cut, which the same short
    # margin without the stop does (Whisper transcribes the padding).
    assert heard >= 20 and missed <= heard // 10
    assert repeated <= 1
    assert looped > 10 * max(1, repeated)


def test_a_stream_decodes_interims_with_the_stop_and_finals_without(tiny_whisper_dir: Path) -> None:
    from pipelined.v1 import audio_pb2, speech_pb2
    from pipelined_server.config import InputLimits, StreamingLimits
    from pipelined_server.registry import ModelInstance
    from pipelined_server.streaming.options import stream_options

    spec = ModelSpec(name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir))
    instance = ModelInstance(spec, pipeline=load_pipeline(spec).pipeline)
    audio = audio_pb2.RawAudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=RATE, channel_count=1
    )
    config = speech_pb2.StreamingRecognitionConfig(audio_format=audio)
    options = stream_options(config, instance, InputLimits(), StreamingLimits())
    assert options.kwargs[whisper_context.KWARG] == 8.0 and whisper_alignatt.KWARG not in options.kwargs
    assert options.interim_kwargs[whisper_context.KWARG] == 1.0
    assert options.interim_kwargs[whisper_alignatt.KWARG] == 0.5
    # Turned off, interims decode as finals.
    off = stream_options(config, instance, InputLimits(), StreamingLimits(interim_alignatt_s=None))
    assert off.interim_kwargs == off.kwargs
    # Both start with their window's final words forced (tasks/whisper_prefix.py), unless turned off.
    assert options.force_prefix and off.force_prefix
    unforced = StreamingLimits(force_committed_prefix=False)
    assert not stream_options(config, instance, InputLimits(), unforced).force_prefix
