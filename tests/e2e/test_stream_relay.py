"""Live streams that one worker cannot admit run on a sibling worker with headroom (streaming/relay.py).

Two real servers in this process play two workers of one port: each has its own models and admission, and
they share the supervisor's directory (their headroom files and relay sockets). Without calibration each
admits one stream per replica, so the second stream on a worker is one it must refuse or relay.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from asr_specs import asr_specs
from harness import ServerProcess, ServerThread
from pipelined.v1 import speech_pb2, speech_pb2_grpc
from pipelined_server.config import AuthConfig, ServerConfig, StreamingLimits
from pipelined_server.streaming.relay import Siblings
from speech_clips import speech
from test_asr_stream_limits import ACTIVE, ENDED, FLOOD_LIMITS, NO_WINDOW, UNREAD, flood, held_open
from test_asr_streaming import audio_requests, config_request, wait_until

MODEL = "tiny-whisper"
RELAYED = "pipelined_streams_relayed_total"
REQUESTS = "pipelined_requests_total"


@pytest.fixture
def workers(tiny_whisper_dir: Path, tiny_ctc_dir: Path) -> Iterator[tuple[ServerThread, ServerThread, Path]]:
    with two_workers(asr_specs(tiny_whisper_dir, tiny_ctc_dir)) as started:
        yield started


@contextlib.contextmanager
def two_workers(
    models: Any, streaming: dict[str, Any] | None = None, **config: Any
) -> Iterator[tuple[ServerThread, ServerThread, Path]]:
    # A short path: a Unix socket's path must fit in 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="relay-"))
    server_config = ServerConfig(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        streaming=StreamingLimits(**{"calibrate": False, "idle_timeout_s": 30, **(streaming or {})}),
        models=models,
        **config,
    )
    servers = [ServerThread(server_config, siblings=Siblings(directory, index, 2)) for index in (0, 1)]
    try:
        yield servers[0], servers[1], directory
    finally:
        for server in servers:
            if server.loop.is_running():  # not stopped by the test
                server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def stub_of(server: ServerThread) -> speech_pb2_grpc.SpeechServiceStub:
    return speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(server.target))


def headroom(directory: Path, index: int) -> dict[str, int]:
    return dict(json.loads((directory / f"worker-{index}.headroom.json").read_text()))


def finals(responses: list[Any]) -> list[tuple[str, int, int]]:
    return [
        (r.text, r.start_offset.ToNanoseconds(), r.end_offset.ToNanoseconds())
        for response in responses
        for r in response.results
        if r.is_final
    ]


def test_a_stream_one_worker_cannot_admit_runs_on_its_sibling(workers: Any) -> None:
    first_worker, second_worker, directory = workers
    # Both published their headroom before serving: one stream each (one replica, not calibrated).
    assert headroom(directory, 0)[MODEL] == headroom(directory, 1)[MODEL] == 1

    gate = threading.Event()
    held = stub_of(first_worker).StreamingRecognize(held_open(gate), timeout=120)
    wait_until(lambda: first_worker.metric(ACTIVE, model=MODEL) == 1)
    wait_until(lambda: headroom(directory, 0)[MODEL] == 0)

    # The first worker is full: this stream runs on the second, through the first's connection.
    # A fixed interval: spare re-decodes on the idle model would fall where each send's timing puts them.
    audio = [config_request(min_decode_interval={"seconds": 1}), *audio_requests(speech())]
    relayed = list(stub_of(first_worker).StreamingRecognize(iter(audio), timeout=120))
    assert finals(relayed), "the relayed stream was transcribed"
    assert first_worker.metric(RELAYED, model=MODEL) == 1
    # Counted once, where it ran: the sibling's stream and call metrics, not the relaying worker's.
    assert second_worker.metric(ENDED, model=MODEL, code="OK") == 1
    assert first_worker.metric(ENDED, model=MODEL, code="OK") == 0
    calls = {"model": MODEL, "task": "automatic-speech-recognition", "method": "StreamingRecognize"}
    assert second_worker.metric(REQUESTS, code="OK", **calls) == 1
    assert first_worker.metric(REQUESTS, code="OK", **calls) == 0
    assert first_worker.metric(ACTIVE, model="") == 0, "the relaying worker shows no pending stream"
    # Its end refreshed the sibling's published headroom at once: all of its capacity at the share it
    # measured (the stream decoded speech), none of it held by the ended stream.
    limits = StreamingLimits()

    def capacity() -> int:
        share = second_worker.metric("pipelined_stream_share", model=MODEL)
        return min(limits.max_streams, math.floor(limits.admission_max_utilization / share + 1e-9))

    wait_until(lambda: headroom(directory, 1)[MODEL] == capacity())

    # The same audio straight to the sibling: its finals span the same speech (their words depend on when
    # each interim decode ran, which the pace of the sends decides, relayed or not).
    direct = finals(list(stub_of(second_worker).StreamingRecognize(iter(audio), timeout=120)))
    assert (direct[0][1], direct[-1][2]) == (finals(relayed)[0][1], finals(relayed)[-1][2])

    gate.set()
    assert list(held) == [] and held.code() == grpc.StatusCode.OK


def test_with_every_worker_full_the_stream_is_refused_and_nothing_is_lost(workers: Any) -> None:
    first_worker, second_worker, directory = workers
    gates = [threading.Event(), threading.Event()]
    held = [stub_of(first_worker).StreamingRecognize(held_open(gate), timeout=120) for gate in gates]
    # One admitted on the first worker, the other relayed to the second: both are full now.
    wait_until(lambda: first_worker.metric(RELAYED, model=MODEL) == 1)
    wait_until(lambda: second_worker.metric(ACTIVE, model=MODEL) == 1)
    wait_until(lambda: headroom(directory, 0)[MODEL] == headroom(directory, 1)[MODEL] == 0)

    refused = stub_of(first_worker).StreamingRecognize(iter([config_request(), *audio_requests(speech())]))
    with pytest.raises(grpc.RpcError) as caught:
        list(refused)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "at capacity for live streams" in error.details()
    assert ("retry-after-ms", "5000") in error.trailing_metadata()

    for gate, call in zip(gates, held, strict=True):
        gate.set()
        assert list(call) == [] and call.code() == grpc.StatusCode.OK, "the admitted streams kept going"
    wait_until(lambda: second_worker.metric(ENDED, model=MODEL, code="OK") == 1)


def test_a_sibling_that_is_gone_leaves_the_refusal(workers: Any) -> None:
    first_worker, second_worker, directory = workers
    second_worker.stop()  # draining withdraws its headroom
    assert not (directory / "worker-1.headroom.json").exists()
    # A headroom file that outlived its worker (killed before the supervisor saw it die).
    (directory / "worker-1.headroom.json").write_text(json.dumps({MODEL: 3}))

    gate = threading.Event()
    held = stub_of(first_worker).StreamingRecognize(held_open(gate), timeout=120)
    wait_until(lambda: first_worker.metric(ACTIVE, model=MODEL) == 1)
    with pytest.raises(grpc.RpcError) as caught:
        list(stub_of(first_worker).StreamingRecognize(iter([config_request(), *audio_requests(speech())])))
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    assert "one per replica until their cost is measured" in error.details()
    assert first_worker.metric(RELAYED, model=MODEL) == 0
    assert first_worker.metric(ENDED, model="", code="RESOURCE_EXHAUSTED") == 1, "counted where refused"
    gate.set()
    assert list(held) == [] and held.code() == grpc.StatusCode.OK


def test_a_relayed_stream_carries_its_token_and_a_stream_without_one_is_refused_first(
    tiny_whisper_dir: Path, tiny_ctc_dir: Path, tmp_path: Path
) -> None:
    """With tokens, the sibling checks the token the client sent (forwarded with the stream), and a call
    without one is refused by the worker it reached, before any relay."""
    tokens = tmp_path / "tokens.yaml"
    token = "relay-test-token-0123456789"
    tokens.write_text(f"tokens:\n  - {{name: app, token: {token}}}\n")
    auth = (("authorization", f"Bearer {token}"),)
    models = asr_specs(tiny_whisper_dir, tiny_ctc_dir)
    with two_workers(models, auth=AuthConfig(tokens_file=str(tokens))) as (first_worker, second_worker, _):
        gate = threading.Event()
        held = stub_of(first_worker).StreamingRecognize(held_open(gate), metadata=auth, timeout=120)
        wait_until(lambda: first_worker.metric(ACTIVE, model=MODEL) == 1)
        audio = [config_request(), *audio_requests(speech())]
        relayed = list(stub_of(first_worker).StreamingRecognize(iter(audio), metadata=auth, timeout=120))
        assert finals(relayed) and first_worker.metric(RELAYED, model=MODEL) == 1
        with pytest.raises(grpc.RpcError) as caught:
            list(stub_of(first_worker).StreamingRecognize(iter(audio), timeout=120))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
        assert first_worker.metric(RELAYED, model=MODEL) == 1
        gate.set()
        assert list(held) == [] and held.code() == grpc.StatusCode.OK


def test_a_relayed_stream_whose_client_never_reads_is_dropped_on_both_workers(
    tiny_whisper_dir: Path, tiny_ctc_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that reads nothing holds neither worker's slot: the relaying worker drops the call once a
    response has waited `idle_timeout_s` for it (the sibling's own bound cannot reach it: its status
    waits behind the unread response)."""
    limits = {**FLOOD_LIMITS, "max_unread_responses": 4, "idle_timeout_s": 1.0}
    models = asr_specs(tiny_whisper_dir, tiny_ctc_dir)
    with two_workers(models, streaming=limits) as (first_worker, second_worker, _):
        gates = [threading.Event() for _ in range(3)]
        # tiny-ctc has two replicas: two streams fill the first worker.
        ctc = config_request(config=speech_pb2.RecognitionConfig(model="tiny-ctc"))
        held = [
            stub_of(first_worker).StreamingRecognize(held_open(g, (ctc,)), timeout=120) for g in gates[:2]
        ]
        wait_until(lambda: first_worker.metric(ACTIVE, model="tiny-ctc") == 2)
        channel = grpc.insecure_channel(first_worker.target, options=list(NO_WINDOW.items()))
        call = speech_pb2_grpc.SpeechServiceStub(channel).StreamingRecognize(flood(gates[2]), timeout=300)
        wait_until(lambda: first_worker.metric(RELAYED, model="tiny-ctc") == 1, 60)
        wait_until(lambda: first_worker.app.state.inflight == 3)
        # A response waited the idle timeout for the client: the relaying worker dropped the call, which
        # ended the sibling's side too (it records the stream as cancelled by its caller, the relay).
        wait_until(lambda: first_worker.app.state.inflight == 2, 60)
        wait_until(lambda: second_worker.metric(ENDED, model="tiny-ctc", code="CANCELLED") == 1, 30)
        (dropped,) = [r.getMessage() for r in caplog.records if "relayed stream waited" in r.getMessage()]
        assert "streaming.idle_timeout_s" in dropped, dropped
        wait_until(lambda: second_worker.metric(UNREAD, model="tiny-ctc") == 0)
        call.cancel()
        for gate, stream in zip(gates, held, strict=False):
            gate.set()
            assert list(stream) == [] and stream.code() == grpc.StatusCode.OK
        gates[2].set()


def test_two_streams_on_one_connection_to_two_workers_are_both_served(
    tiny_whisper_dir: Path, tmp_path: Path
) -> None:
    """The real supervisor: one connection reaches one worker, which admits one stream (one replica, not
    calibrated) and relays the second to its sibling; the supervisor's metrics count each stream once."""
    config = tmp_path / "server.yaml"
    config.write_text(
        "grace_period_s: 10\nstreaming: {calibrate: false}\n"
        f"models:\n  - {{name: {MODEL}, task: automatic-speech-recognition, source: '{tiny_whisper_dir}'}}\n"
    )
    server = ServerProcess(["--config", str(config), "--workers", "2"], tmp_path)
    try:
        wait_until(lambda: server.process.poll() is None and ready(server) == 2, 180)
        stub = speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(server.target))
        gates = [threading.Event(), threading.Event()]
        held = [stub.StreamingRecognize(held_open(gate), timeout=120) for gate in gates]
        wait_until(lambda: server.metric(RELAYED) == 1, 60)
        # Each counted once, where it runs: the sibling's count may show a moment after the relay's.
        wait_until(lambda: server.metric(ACTIVE) == 2, 30)
        for gate, call in zip(gates, held, strict=True):
            gate.set()
            assert list(call) == [] and call.code() == grpc.StatusCode.OK
        wait_until(lambda: server.metric(ENDED) == 2, 30)
        assert server.metric(ACTIVE) == 0
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0, server.log.read_text()[-3000:]
    finally:
        server.stop()


def ready(server: ServerProcess) -> float:
    try:
        return server.metric("pipelined_model_ready")
    except OSError:  # the supervisor's metrics port is not open yet
        return 0.0
