"""Operations: health, reflection, metrics, models service, and the SIGTERM drain of a real process."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import ServerThread
from pipelined import Client, Unavailable
from tiny_models import build_tiny_whisper, tiny_audio

ASR = "automatic-speech-recognition"


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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def server_process(tmp_path: Path, tiny_whisper_dir: Path) -> Any:
    """A real `pipelined-server` process; its second model is bigger, so it is still loading for a while."""
    slow = build_tiny_whisper(tmp_path / "slow", d_model=384, layers=4)
    config = tmp_path / "server.yaml"
    config.write_text(
        "grace_period_s: 30\nmodels:\n"
        f"  - {{name: fast, task: {ASR}, source: '{tiny_whisper_dir}', pipeline_kwargs: {{num_beams: 1}}}}\n"
        f"  - {{name: slow, task: {ASR}, source: '{slow}', pipeline_kwargs: {{num_beams: 1}}}}\n"
    )
    port, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelined_server.cli",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    yield process, f"127.0.0.1:{port}", metrics_port
    if process.poll() is None:
        process.kill()


def test_sigterm_during_load_drains_without_losing_a_request(server_process: Any) -> None:
    process, target, metrics_port = server_process
    client = Client(target, timeout=120)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if client.health("fast") == "SERVING":
                break
        except Unavailable:
            pass
        time.sleep(0.1)
    else:
        pytest.fail("the fast model never became ready")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
    assert re.search(r'pipelined_model_ready\{model="fast"\} 1.0', metrics)

    results: list[Any] = []
    long_audio = tiny_audio(90.0, seed=5)
    in_flight = threading.Thread(
        target=lambda: results.append(client.pipeline(ASR, model="fast")(long_audio))
    )
    in_flight.start()
    # SIGTERM only once the request is being computed (not merely sent), however loaded the machine is.
    calls = re.compile(r'pipelined_pipeline_calls_total\{model="fast"\} ([0-9.]+)')
    while (
        not (
            m := calls.search(
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics").read().decode()
            )
        )
        or float(m.group(1)) < 1
    ):
        assert in_flight.is_alive(), "the request finished before SIGTERM could be sent"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(Unavailable):
        client.pipeline(ASR, model="fast")(tiny_audio(1.0))
    in_flight.join(120)
    assert results and "text" in results[0], "the in-flight request was lost"
    assert process.wait(60) == 0


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
