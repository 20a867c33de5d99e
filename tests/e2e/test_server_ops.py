"""Operations: health, reflection, metrics, models service, and the SIGTERM drain of a real process."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import ServerProcess, ServerThread, wait_for
from pipelined import Cancelled, Client, PipelinedError, Unavailable
from pipelined.v1 import audio_pb2, speech_pb2, speech_pb2_grpc
from tiny_models import build_tiny_whisper, tiny_audio

ASR = "automatic-speech-recognition"
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_per_model_and_overall(asr_server: ServerThread) -> None:
    client = Client(asr_server.target)
    assert client.health() == "SERVING"
    assert client.health("tiny-whisper") == "SERVING"
    assert client.health("tiny-ctc") == "SERVING"


def test_reflection_lists_the_services(asr_server: ServerThread) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(grpc.insecure_channel(asr_server.target))
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"pipelined.v1.SpeechService", "pipelined.v1.ModelsService", "grpc.health.v1.Health"} <= names


def test_models_service(asr_server: ServerThread) -> None:
    client = Client(asr_server.target)
    models = {m["name"]: m for m in client.models()}
    assert models["tiny-whisper"]["state"] == "ready" and models["tiny-whisper"]["default"]
    assert models["tiny-whisper"]["sampling_rate"] == 16000
    assert models["tiny-ctc"]["task"] == ASR and models["tiny-ctc"]["device"] == "cpu"
    assert "return_timestamps" in models["tiny-ctc"]["accepted_parameters"]
    assert client.model("tiny-ctc")["dtype"] == "float32"
    assert client.models(task="fill-mask") == []


def test_request_metrics_by_model_and_code(asr_server: ServerThread) -> None:
    labels = {"model": "tiny-ctc", "task": ASR, "method": "Recognize"}
    before = asr_server.metric("pipelined_requests_total", **labels, code="OK")
    Client(asr_server.target).pipeline(ASR, model="tiny-ctc")(tiny_audio(1.0))
    assert asr_server.metric("pipelined_requests_total", **labels, code="OK") == before + 1
    assert asr_server.metric("pipelined_request_latency_seconds_count", **labels) >= 1
    assert asr_server.metric("pipelined_model_load_seconds", model="tiny-ctc") > 0


def _health(target: str, service: str = "") -> int:
    """grpc.health.v1's answer, asked with the plain health stub (not the SDK)."""
    with grpc.insecure_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status)


def audio_input(samples: np.ndarray) -> audio_pb2.AudioInput:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=16000)
    return audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=pcm, format=fmt))


def _start(tmp_path: Path, grace_s: float, models: str, extra: str = "") -> ServerProcess:
    config = tmp_path / "server.yaml"
    config.write_text(f"grace_period_s: {grace_s}\n{extra}models:\n{models}")
    return ServerProcess(["--config", str(config)], tmp_path)


def _model(name: str, source: Path) -> str:
    return f"  - {{name: {name}, task: {ASR}, source: '{source}', pipeline_kwargs: {{num_beams: 1}}}}\n"


def _batches(server: ServerProcess, model: str) -> float:
    return server.metric("pipelined_batch_size_count", model=model)


def _wait_computing(server: ServerProcess, model: str, call: threading.Thread, batches_before: float) -> None:
    """Until the call's batch is on the model (its size is observed as it starts), not merely sent. Counted
    from `batches_before`: the live-stream calibration at start-up runs batches too."""
    wait_for(
        lambda: not call.is_alive() or _batches(server, model) > batches_before,
        timeout_s=120,
        what="the long call to reach the model",
    )
    assert call.is_alive(), "the call finished before SIGTERM could be sent"


@pytest.fixture(scope="module")
def slow_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bigger tiny Whisper (d_model 384, 4 layers): slower to load and to decode."""
    return build_tiny_whisper(tmp_path_factory.mktemp("slow-whisper"), d_model=384, layers=4)


@pytest.fixture()
def server_process(tmp_path: Path, tiny_whisper_dir: Path, slow_whisper_dir: Path) -> Iterator[ServerProcess]:
    """A real `pipelined-server` process; its second model is bigger, so it is still loading for a while."""
    server = _start(tmp_path, 30, _model("fast", tiny_whisper_dir) + _model("slow", slow_whisper_dir))
    yield server
    server.stop()


def test_sigterm_during_load_drains_without_losing_a_request(server_process: ServerProcess) -> None:
    server = server_process
    client = Client(server.target, timeout=120)
    wait_for(lambda: _serving(client, "fast"), timeout_s=180, what="the fast model to be ready")
    assert server.metric("pipelined_model_ready", model="fast") == 1

    results: list[Any] = []
    # 10 minutes (38 MB of float32, within the default 64 MiB payload): ~1.7 s of tiny-Whisper windows on
    # a quiet 2-core machine, so surely still in flight after SIGTERM and the health checks below (90 s
    # took ~0.25 s), and well within the 30 s grace.
    long_audio = tiny_audio(600.0, seed=5)
    in_flight = threading.Thread(
        target=lambda: results.append(client.pipeline(ASR, model="fast")(long_audio))
    )
    before = _batches(server, "fast")
    in_flight.start()
    _wait_computing(server, "fast", in_flight, before)
    server.process.send_signal(signal.SIGTERM)
    # The drain has begun once health says so (grpc.health.v1, still answering while the call runs).
    wait_for(lambda: _health(server.target) == NOT_SERVING, what="health NOT_SERVING after SIGTERM")
    assert in_flight.is_alive()
    assert _health(server.target, "fast") == NOT_SERVING
    # A raw stub: the SDK would retry UNAVAILABLE until the server is gone.
    with grpc.insecure_channel(server.target) as channel, pytest.raises(grpc.RpcError) as refused:
        config = speech_pb2.ClipRecognitionConfig(config=speech_pb2.RecognitionConfig(model="fast"))
        request = speech_pb2.RecognizeRequest(config=config, audio=audio_input(tiny_audio(1.0)))
        speech_pb2_grpc.SpeechServiceStub(channel).Recognize(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "server is shutting down" in (refused.value.details() or "")
    in_flight.join(120)
    assert results and results[0]["text"], "the in-flight request was lost"
    assert server.process.wait(60) == 0


def test_sigterm_cuts_a_call_that_outlasts_the_grace_and_still_exits_0(
    tmp_path: Path, slow_whisper_dir: Path
) -> None:
    """A 10-minute recognition against a 1 s grace: health turns NOT_SERVING while it runs, the call is cut
    after the grace, its work stops at the next window and the process exits 0. Were the work not stopped,
    the watchdog would exit 1 at grace + 5 s (cli.py); were the call not cut, the process would not exit
    before the recognition ends. The model is the bigger tiny Whisper (d_model 384, 4 layers: ~12 s for
    these 10 minutes on a quiet 2-core machine, 120 s took ~2.5 s), so the recognition surely outlasts the
    grace; the smallest one decodes them in ~1.7 s, barely more than the grace and the steps before it."""
    # No live-stream calibration at start-up: no stream here, and it costs this model ~15 s.
    server = _start(tmp_path, 1, _model("w", slow_whisper_dir), "streaming: {calibrate: false}\n")
    try:
        client = Client(server.target, timeout=600)
        server.wait_serving(client)
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(client.pipeline(ASR, model="w")(tiny_audio(600.0, seed=6)))
            except PipelinedError as error:
                outcome.append(error)

        in_flight = threading.Thread(target=call)
        before = _batches(server, "w")
        in_flight.start()
        _wait_computing(server, "w", in_flight, before)
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: _health(server.target, "w") == NOT_SERVING, what="health NOT_SERVING after SIGTERM")
        assert in_flight.is_alive(), "the recognition ended before the grace did"
        assert server.process.wait(120) == 0
        in_flight.join(60)
        assert len(outcome) == 1 and isinstance(outcome[0], Unavailable | Cancelled), outcome
    finally:
        server.stop()


def _serving(client: Client, model: str) -> bool:
    try:
        return client.health(model) == "SERVING"
    except Unavailable:
        return False


def test_a_model_that_fails_to_load_does_not_take_the_others_down(tiny_ctc_dir: Path) -> None:
    from pipelined_server.config import ModelSpec, ServerConfig

    specs = (
        ModelSpec(name="broken", task=ASR, source="no-such-org/no-such-model"),
        ModelSpec(name="ctc", task=ASR, source=str(tiny_ctc_dir), default=True),
    )
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=specs))
    try:
        client = Client(server.target)
        assert client.health() == "SERVING"
        assert client.health("broken") == "NOT_SERVING"
        broken = client.model("broken")
        assert broken["state"] == "failed" and "no-such-model" in broken["error"]
        with pytest.raises(Unavailable, match="failed to load"):
            client.pipeline(ASR, model="broken")(tiny_audio(1.0))
        assert "text" in client.pipeline(ASR)(tiny_audio(1.0))
    finally:
        server.stop()
