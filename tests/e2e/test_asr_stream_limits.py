"""Live-stream limits through a real server and a real gRPC client: each limit ends only the stream that
passed it, with its own status and a message naming the setting, and the server keeps serving.

Tiny random models; the tests that need speech replay a real recording (tests/fixtures/speech_clips.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from asr_specs import ASR, asr_specs
from harness import ServerThread
from pipelined import Client
from pipelined.v1 import speech_pb2, speech_pb2_grpc
from pipelined_server.config import ServerConfig, StreamingLimits
from pipelined_server.streaming import calibration
from refusals import refused_stream
from speech_clips import speech
from test_asr_streaming import RATE, SILENCE, audio_requests, config_request, seconds, wait_until

ACTIVE = "pipelined_active_streams"
ENDED = "pipelined_streams_ended_total"


@pytest.fixture(scope="module")
def start(tiny_whisper_dir: Path, tiny_ctc_dir: Path) -> Iterator[Callable[..., ServerThread]]:
    """Starts a server with the given streaming limits (stopped at the end of the module)."""
    servers: list[ServerThread] = []

    def start(**limits: Any) -> ServerThread:
        config = ServerConfig(
            host="127.0.0.1",
            port=0,
            metrics_port=0,
            streaming=StreamingLimits(**limits),
            models=asr_specs(tiny_whisper_dir, tiny_ctc_dir),
        )
        servers.append(ServerThread(config))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


def stub_of(server: ServerThread, **options: Any) -> speech_pb2_grpc.SpeechServiceStub:
    channel = grpc.insecure_channel(server.target, options=list(options.items()))
    return speech_pb2_grpc.SpeechServiceStub(channel)


def held_open(
    gate: threading.Event, first: tuple[Any, ...] = (config_request(),)
) -> Iterator[speech_pb2.StreamingRecognizeRequest]:
    """A stream that sends `first`, then silence at real-time pace until `gate` is set."""
    yield from first
    while not gate.is_set():
        yield SILENCE
        gate.wait(0.1)  # paced, and ended as soon as the gate opens


def never_configured(gate: threading.Event) -> Iterator[speech_pb2.StreamingRecognizeRequest]:
    """A stream that sends nothing (not even its config) until `gate` is set."""
    gate.wait(60)
    yield from ()


def still_serves(server: ServerThread) -> None:
    """Another stream on the same server runs to its OK end, and no stream is left open."""
    stub = stub_of(server)
    call = stub.StreamingRecognize(iter([config_request(), *audio_requests(np.zeros(RATE, np.float32))]))
    assert list(call) == [] and call.code() == grpc.StatusCode.OK
    wait_until(lambda: sum(server.metric(ACTIVE, model=m) for m in ("", "tiny-whisper")) == 0)


def failure(call: Any) -> tuple[list[Any], grpc.RpcError]:
    """The responses a call sent before it failed, and its error."""
    received: list[Any] = []
    with pytest.raises(grpc.RpcError) as caught:
        for response in call:
            received.append(response)
    return received, caught.value


def test_audio_faster_than_real_time_is_resource_exhausted(start: Callable[..., ServerThread]) -> None:
    server = start(max_realtime_factor=3.0, realtime_burst_s=2.0)
    minute = audio_requests(np.zeros(60 * RATE, np.float32))  # sent at once: far beyond 3x real time
    _, error = failure(stub_of(server).StreamingRecognize(iter([config_request(), *minute]), timeout=120))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "max_realtime_factor=3" in error.details()
    still_serves(server)


def test_held_audio_is_capped(start: Callable[..., ServerThread]) -> None:
    server = start(max_held_audio_s=3.0)
    # One long utterance (pauses shorter than 10 s do not end it), and a window that may only move past
    # final words once it is 5 s long (max_window_s): the stream must hold more than 3 s at some point.
    config = config_request(endpointing=speech_pb2.EndpointingConfig(min_silence={"seconds": 10}))
    call = stub_of(server).StreamingRecognize(iter([config, *audio_requests(speech())]), timeout=120)
    _, error = failure(call)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "max_held_audio_s=3" in error.details()
    still_serves(server)


def test_stream_duration_limit_sends_the_finals_then_out_of_range(start: Callable[..., ServerThread]) -> None:
    server = start(max_stream_duration_s=2.0)
    config = config_request(voice_activity_events=True)
    call = stub_of(server).StreamingRecognize(iter([config, *audio_requests(speech())]), timeout=120)
    received, error = failure(call)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE, error.details()
    assert "max_stream_duration_s=2" in error.details()
    finals = [r for response in received for r in response.results if r.is_final]
    assert finals, "the speech before the limit was transcribed"
    assert all(seconds(r.end_offset) <= 2.0 + 1e-6 for r in finals)
    assert received[-1].speech_event == speech_pb2.SPEECH_EVENT_SPEECH_ENDED
    still_serves(server)


def test_streams_without_config_count_and_time_out(start: Callable[..., ServerThread]) -> None:
    # The silent streams must hold their slots until the third stream is refused (a timeout of 1 s could
    # pass during that bookkeeping on a loaded machine), and time out by themselves after it.
    server = start(max_streams=2, idle_timeout_s=5.0)
    stub = stub_of(server)
    gates = [threading.Event() for _ in range(2)]
    silent = [stub.StreamingRecognize(never_configured(g), timeout=60) for g in gates]
    wait_until(lambda: server.metric(ACTIVE, model="") == 2)
    _, error = failure(stub.StreamingRecognize(iter([config_request(), SILENCE]), timeout=60))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams=2" in error.details()
    for call in silent:
        _, error = failure(call)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "idle_timeout_s" in error.details()
    for gate in gates:
        gate.set()
    still_serves(server)


def test_per_peer_stream_limit(start: Callable[..., ServerThread]) -> None:
    server = start(max_streams_per_peer=1)
    stub = stub_of(server)
    gate = threading.Event()
    first = stub.StreamingRecognize(held_open(gate), timeout=60)
    wait_until(lambda: server.metric(ACTIVE, model="tiny-whisper") == 1)
    _, error = failure(stub.StreamingRecognize(iter([config_request(), SILENCE]), timeout=60))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_streams_per_peer=1" in error.details() and "127.0.0.1" in error.details()
    gate.set()
    assert list(first) == [] and first.code() == grpc.StatusCode.OK
    still_serves(server)


def test_admission_refuses_past_measured_capacity_with_a_retry_hint(
    start: Callable[..., ServerThread],
) -> None:
    # Any measured load is past a utilization this small: the second stream must be refused.
    server = start(admission_max_utilization=1e-6)
    stub = stub_of(server)
    gate = threading.Event()

    responses: list[Any] = []
    first = stub.StreamingRecognize(
        held_open(gate, (config_request(), *audio_requests(speech()))), timeout=120
    )
    reader = threading.Thread(target=lambda: responses.extend(first))
    reader.start()
    wait_until(lambda: any(r.is_final for response in responses for r in response.results), 120)
    assert server.metric("pipelined_stream_headroom", model="tiny-whisper") == 0
    refusal = refused_stream(server.target, "tiny-whisper")
    assert "admission_max_utilization" in refusal.message
    assert refusal.retry_after_s == 5.0
    gate.set()
    reader.join(60)
    assert first.code() == grpc.StatusCode.OK, "the admitted stream keeps going"
    still_serves(server)  # no stream open: the next one is admitted


def refused_beside_one(server: ServerThread) -> str:
    """Holds one silent stream on the Whisper model (no decode: nothing measured) and opens another through
    the SDK (refusals.py): its refusal's message, with the retry hint; the held stream then ends OK."""
    gate = threading.Event()
    first = stub_of(server).StreamingRecognize(held_open(gate), timeout=60)
    wait_until(lambda: server.metric(ACTIVE, model="tiny-whisper") == 1)
    refusal = refused_stream(server.target, "tiny-whisper")
    assert refusal.retry_after_s == 5.0
    gate.set()
    assert list(first) == [] and first.code() == grpc.StatusCode.OK, "the admitted stream keeps going"
    still_serves(server)
    return refusal.message


def test_a_fresh_server_knows_a_streams_cost_and_refuses_past_it(start: Callable[..., ServerThread]) -> None:
    # Issue 8: a fresh worker used to admit blind up to max_streams before any decode was measured.
    server = start(admission_max_utilization=1e-6)
    for model in ("tiny-whisper", "tiny-ctc"):  # calibrated before SERVING, before any stream
        share = server.metric("pipelined_stream_share", model=model)
        assert 0 < share < float("inf"), (model, share)
        assert server.metric("pipelined_stream_headroom", model=model) == 0  # nothing fits in 1e-6
    message = refused_beside_one(server)
    assert "calibrated at start-up" in message, message
    assert "streaming.admission_max_utilization=1e-06" in message


def test_without_calibration_a_fresh_server_admits_one_stream_per_replica(
    start: Callable[..., ServerThread],
) -> None:
    server = start(calibrate=False)
    assert server.metric("pipelined_stream_share", model="tiny-whisper") == 0  # never calibrated
    assert server.metric("pipelined_stream_headroom", model="tiny-whisper") == 1  # its one replica
    assert server.metric("pipelined_stream_headroom", model="tiny-ctc") == 2
    message = refused_beside_one(server)
    assert "one per replica until their cost is measured" in message, message
    assert "streaming.calibrate is off" in message


def test_a_failed_calibration_leaves_the_model_serving_one_stream_per_replica(
    start: Callable[..., ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def fails(*args: Any) -> float:
        raise RuntimeError("injected calibration failure")

    monkeypatch.setattr(calibration, "stream_share", fails)
    server = start()
    assert server.metric("pipelined_model_ready", model="tiny-whisper") == 1
    assert server.metric("pipelined_stream_headroom", model="tiny-whisper") == 1  # one per replica
    still_serves(server)


UNREAD = "pipelined_stream_unread_responses"
# gRPC's flow control holds a client's unread responses first: with BDP probing the client's HTTP/2
# window grows to megabytes (4 MB of 1 kB messages before the first send blocked, measured), thousands
# of speech events. A window of (almost) nothing makes the server's outbox the only place responses
# wait, so its bound is what the test reaches.
NO_WINDOW = {"grpc.http2.bdp_probe": 0, "grpc.http2.lookahead_bytes": 1}


def flood(gate: threading.Event) -> Iterator[speech_pb2.StreamingRecognizeRequest]:
    """The recording over and over, as fast as the server reads it, with speech events on (two responses
    per utterance, never merged), on the CTC model (fast decodes), until `gate` is set."""
    yield config_request(config=speech_pb2.RecognitionConfig(model="tiny-ctc"), voice_activity_events=True)
    clip = audio_requests(speech())
    while not gate.is_set():
        yield from clip


def held_until(server: ServerThread, done: Callable[[], bool], timeout: float) -> list[float]:
    """The responses waiting in the server for the stream's client, sampled until `done()`."""
    held: list[float] = []
    wait_until(lambda: held.append(server.metric(UNREAD, model="tiny-ctc")) or done(), timeout)
    return held


def still_serves_all(server: ServerThread) -> None:
    """A unary call and another stream on the same server both succeed."""
    result = Client(server.target).pipeline(ASR, model="tiny-ctc")(speech()[:RATE])
    assert isinstance(result["text"], str)
    still_serves(server)


# Faster than real time (the recording on repeat) without the pace limit or the held-audio cap ending
# the stream first: the outbox's bound is the one limit these streams meet.
# No spare re-decodes either: the responses per utterance stay the two or so the bound is sized for.
FLOOD_LIMITS = {
    "max_realtime_factor": 1000.0,
    "max_held_audio_s": 3600.0,
    "calibrate": False,
    "idle_decode_interval_s": None,
}


def test_a_client_that_stops_reading_gets_its_responses_then_resource_exhausted(
    start: Callable[..., ServerThread],
) -> None:
    server = start(max_unread_responses=4, **FLOOD_LIMITS)
    gate = threading.Event()
    call = stub_of(server, **NO_WINDOW).StreamingRecognize(flood(gate), timeout=300)
    # Four responses and the stream's end (its reader and decoder stopped at the bound)...
    held_until(server, lambda: server.metric(UNREAD, model="tiny-ctc") >= 5, 120)
    still_serves_all(server)
    # ...and nothing more while the client kept sending and the server served others.
    assert server.metric(UNREAD, model="tiny-ctc") == 5
    received, error = failure(call)  # the client reads again, within streaming.idle_timeout_s
    gate.set()
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "max_unread_responses=4" in error.details()
    events = [r.speech_event for r in received]
    assert events.count(speech_pb2.SPEECH_EVENT_SPEECH_STARTED) >= 2, events
    wait_until(lambda: server.metric(UNREAD, model="tiny-ctc") == 0)
    assert server.metric(ENDED, model="tiny-ctc", code="RESOURCE_EXHAUSTED") == 1
    still_serves_all(server)


def test_a_client_that_never_reads_is_dropped_after_the_idle_timeout(
    start: Callable[..., ServerThread], caplog: pytest.LogCaptureFixture
) -> None:
    # 5 s, not less: the sampling below must see the fifth response held before the drop, on a loaded machine.
    server = start(max_unread_responses=4, idle_timeout_s=5.0, **FLOOD_LIMITS)
    gate = threading.Event()
    call = stub_of(server, **NO_WINDOW).StreamingRecognize(flood(gate), timeout=300)
    # The status cannot pass the response the client does not read: the server frees the stream (its
    # slot, its responses) and records why; the client only sees its own deadline or cancel.
    ended = lambda: server.metric(ENDED, model="tiny-ctc", code="RESOURCE_EXHAUSTED") == 1  # noqa: E731
    held = held_until(server, ended, 120)
    assert max(held) == 5, "four responses and the stream's end, never more"
    (dropped,) = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert "max_unread_responses=4" in dropped and "idle_timeout_s" in dropped, dropped
    assert server.metric(ACTIVE, model="tiny-ctc") == 0
    assert server.metric(UNREAD, model="tiny-ctc") == 0
    still_serves_all(server)
    call.cancel()
    gate.set()
    assert call.code() == grpc.StatusCode.CANCELLED
