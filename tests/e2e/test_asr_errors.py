"""Every bad input gets its status code and a clear message; the server keeps serving the next request."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import numpy as np
import pytest
from asr_specs import asr_specs
from harness import ServerThread, wait_for
from pipelined import Client, DeadlineExceeded, InvalidArgument, NotFound, ResourceExhausted
from pipelined.v1 import audio_pb2, common_pb2, speech_pb2, speech_pb2_grpc
from pipelined_server.audio import AudioLimits
from pipelined_server.config import BatchingConfig, ServerConfig
from tiny_models import build_tiny_whisper, tiny_audio

ASR = "automatic-speech-recognition"


@pytest.fixture(scope="module")
def stub(asr_server: ServerThread) -> speech_pb2_grpc.SpeechServiceStub:
    return speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(asr_server.target))


def raw(
    data: bytes, encoding: int = audio_pb2.AUDIO_ENCODING_LINEAR16, rate: int = 16000, channels: int = 1
) -> Any:
    fmt = audio_pb2.RawAudioFormat(encoding=encoding, sample_rate_hertz=rate, channel_count=channels)
    return audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=data, format=fmt))


def clip(**shared: Any) -> speech_pb2.ClipRecognitionConfig:
    """A whole-clip config carrying only shared fields."""
    return speech_pb2.ClipRecognitionConfig(config=speech_pb2.RecognitionConfig(**shared))


GOOD = raw(np.zeros(8000, np.int16).tobytes())

BAD_REQUESTS: list[tuple[str, speech_pb2.RecognizeRequest, grpc.StatusCode, str]] = [
    (
        "undecodable",
        speech_pb2.RecognizeRequest(audio=audio_pb2.AudioInput(encoded=b"not audio at all" * 50)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "decode",
    ),
    (
        "empty encoded",
        speech_pb2.RecognizeRequest(audio=audio_pb2.AudioInput(encoded=b"")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "empty",
    ),
    ("no audio", speech_pb2.RecognizeRequest(), grpc.StatusCode.INVALID_ARGUMENT, "audio is missing"),
    (
        "odd raw length",
        speech_pb2.RecognizeRequest(audio=raw(b"\x00" * 1001)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "multiple",
    ),
    (
        "unspecified encoding",
        speech_pb2.RecognizeRequest(audio=raw(b"\x00" * 1000, encoding=0)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "AUDIO_ENCODING_UNSPECIFIED",
    ),
    (
        "sample rate too low",
        speech_pb2.RecognizeRequest(audio=raw(b"\x00" * 1000, rate=100)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "100",
    ),
    (
        "too many channels",
        speech_pb2.RecognizeRequest(audio=raw(b"\x00" * 1024, channels=64)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "64",
    ),
    (
        "unknown model",
        speech_pb2.RecognizeRequest(config=clip(model="nope"), audio=GOOD),
        grpc.StatusCode.NOT_FOUND,
        "nope",
    ),
    (
        "char timestamps on whisper",
        speech_pb2.RecognizeRequest(
            config=clip(timestamps=speech_pb2.TIMESTAMP_GRANULARITY_CHAR), audio=GOOD
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "CHAR",
    ),
    (
        "language on ctc",
        speech_pb2.RecognizeRequest(config=clip(model="tiny-ctc", language="fr"), audio=GOOD),
        grpc.StatusCode.INVALID_ARGUMENT,
        "generative",
    ),
    (
        "unknown language",
        speech_pb2.RecognizeRequest(config=clip(language="klingon"), audio=GOOD),
        grpc.StatusCode.INVALID_ARGUMENT,
        "klingon",
    ),
    (
        "zero beams",
        speech_pb2.RecognizeRequest(
            config=clip(generation=common_pb2.DecodingOptions(num_beams=0)),
            audio=GOOD,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "num_beams",
    ),
    (
        "stride without chunk",
        speech_pb2.RecognizeRequest(
            config=speech_pb2.ClipRecognitionConfig(stride_length={"seconds": 2}), audio=GOOD
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "stride_length needs chunk_length",
    ),
    (
        "return_language on ctc",
        speech_pb2.RecognizeRequest(
            config=speech_pb2.ClipRecognitionConfig(
                config=clip(model="tiny-ctc").config, return_language=True
            ),
            audio=GOOD,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "return_language",
    ),
]


@pytest.mark.parametrize(
    ("name", "request_", "code", "needle"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_request_status_then_next_request_served(
    stub: speech_pb2_grpc.SpeechServiceStub, name: str, request_: Any, code: grpc.StatusCode, needle: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recognize(request_, timeout=60)
    assert caught.value.code() == code, caught.value.details()
    assert needle.lower() in caught.value.details().lower()
    assert stub.Recognize(speech_pb2.RecognizeRequest(audio=GOOD), timeout=60).model == "tiny-whisper"


def test_sdk_raises_typed_errors(asr_server: ServerThread) -> None:
    client = Client(asr_server.target)
    with pytest.raises(InvalidArgument, match="INVALID_ARGUMENT"):
        client.pipeline(ASR)(b"garbage bytes" * 10)
    with pytest.raises(NotFound, match="missing-model"):
        client.pipeline(ASR, model="missing-model")(tiny_audio(1.0))


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory, tiny_ctc_dir: Any) -> Any:
    """One request at a time, a queue of two, small audio limits, and a bigger (slower) Whisper to keep busy."""
    slow = build_tiny_whisper(tmp_path_factory.mktemp("slow-whisper"), d_model=384, layers=4)
    specs = asr_specs(slow, tiny_ctc_dir, BatchingConfig(max_batch_size=1, max_queue_size=2))
    limits = AudioLimits(max_payload_bytes=8_000_000, max_duration_s=200.0)
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, audio=limits, models=specs))
    yield server
    server.stop()


def test_payload_and_duration_limits(strict_server: ServerThread) -> None:
    pipe = Client(strict_server.target).pipeline(ASR)
    with pytest.raises(InvalidArgument, match="payload"):
        pipe(b"\x00" * 9_000_000)
    with pytest.raises(InvalidArgument, match="over the limit of 200"):
        pipe({"raw": np.zeros(8000 * 201, np.float32), "sampling_rate": 8000})
    assert "text" in pipe(tiny_audio(1.0))


def _queued(server: ServerThread, model: str = "tiny-whisper") -> int:
    scheduler = server.app.state.registry.instances[model].scheduler
    assert scheduler is not None
    return scheduler.depth


def _busy(server: ServerThread, seconds: float = 120.0) -> threading.Thread:
    """Occupies the one-at-a-time model with a long-form decode; returns once the pipeline is computing it.
    120 s of audio keeps it busy about 2.5 s on a quiet 2-core machine; 45 s, as before, could end before
    the requests meant to queue behind it had arrived (a CI-like quiet run failed so)."""
    audio = tiny_audio(seconds, seed=99)
    # A batch is counted in pipelined_batch_size as it starts (pipeline items and calls once it is done).
    batches = server.metric("pipelined_batch_size_count", model="tiny-whisper")
    thread = threading.Thread(
        target=lambda: Client(server.target).pipeline(ASR)(audio, return_timestamps=True)
    )
    thread.start()
    wait_for(
        lambda: server.metric("pipelined_batch_size_count", model="tiny-whisper") > batches,
        what="the long-form decode to start",
    )
    return thread


def test_full_queue_is_resource_exhausted(strict_server: ServerThread) -> None:
    busy = _busy(strict_server)
    pipe = Client(strict_server.target).pipeline(ASR)
    queued = [threading.Thread(target=pipe, args=(tiny_audio(1.0),)) for _ in range(2)]
    for t in queued:
        t.start()
    wait_for(lambda: _queued(strict_server) == 2, what="two queued requests")
    with pytest.raises(ResourceExhausted, match="max_queue_size"):
        pipe(tiny_audio(1.0))
    for t in [busy, *queued]:
        t.join()
    assert "text" in pipe(tiny_audio(1.0))


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_expired_or_cancelled_requests_are_never_computed(strict_server: ServerThread, how: str) -> None:
    model = "tiny-whisper"
    items_before = strict_server.metric("pipelined_pipeline_items_total", model=model)
    skipped_before = sum(
        strict_server.metric("pipelined_requests_skipped_total", model=model, reason=r)
        for r in ("deadline", "cancelled")
    )
    busy = _busy(strict_server)
    request = speech_pb2.RecognizeRequest(audio=GOOD)
    stub = speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(strict_server.target))
    if how == "deadline":
        with pytest.raises(DeadlineExceeded):
            Client(strict_server.target, timeout=0.3).pipeline(ASR)(tiny_audio(1.0))
    else:
        future = stub.Recognize.future(request, timeout=60)
        wait_for(lambda: _queued(strict_server) == 1, what="the request to be queued")
        future.cancel()
    busy.join()

    def skipped() -> float:
        return sum(
            strict_server.metric("pipelined_requests_skipped_total", model=model, reason=r)
            for r in ("deadline", "cancelled")
        )

    if how == "deadline":
        # The 0.3 s deadline may pass before the request reached the queue (its handler still decoding the
        # audio on a loaded machine): then there is nothing to skip. Once no call is in flight, whatever
        # was queued has been dropped and counted.
        wait_for(
            lambda: skipped() > skipped_before or strict_server.app.state.inflight == 0,
            what="the request to be skipped or to end",
        )
        assert skipped() - skipped_before <= 1
    else:
        wait_for(lambda: skipped() > skipped_before, what="the request to be skipped")
        assert skipped() - skipped_before == 1
    # Only the long-form request reached the pipeline.
    assert strict_server.metric("pipelined_pipeline_items_total", model=model) - items_before == 1
