"""The access log (issue 10, item 5): a line per call, health checks and reflection included (health at
DEBUG unless `logging.health_checks`), the caller's `x-request-id` returned on every kind of call, live
streams included and errors too, and never anything the caller sent."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import ServerProcess, ServerThread, wait_for
from pipelined import Client
from pipelined.pipelines.generic import ValueEncoder
from pipelined.v1 import (
    audio_pb2,
    generic_pb2,
    generic_pb2_grpc,
    speech_pb2,
    speech_pb2_grpc,
    text_pb2,
    text_pb2_grpc,
)
from tiny_models import tiny_audio
from tiny_text_models import build_tiny_bert

RATE = 16000
LINEAR16 = audio_pb2.RawAudioFormat(encoding=audio_pb2.AUDIO_ENCODING_LINEAR16, sample_rate_hertz=RATE)


def pcm(seconds: float) -> bytes:
    return (np.clip(tiny_audio(seconds), -1, 1) * 32767).astype("<i2").tobytes()


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "pipelined.access"]


def record_of(caplog: pytest.LogCaptureFixture, request_id: str) -> logging.LogRecord:
    (record,) = [r for r in access_records(caplog) if r.access["request_id"] == request_id]  # type: ignore[attr-defined]
    return record


def test_live_streams_return_the_request_id_and_are_logged(
    asr_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    stub = speech_pb2_grpc.SpeechServiceStub(grpc.insecure_channel(asr_server.target))
    config = speech_pb2.StreamingRecognizeRequest(
        streaming_config=speech_pb2.StreamingRecognitionConfig(audio_format=LINEAR16)
    )
    audio = speech_pb2.StreamingRecognizeRequest(audio=pcm(0.5))
    with caplog.at_level(logging.INFO, logger="pipelined.access"):
        ok = stub.StreamingRecognize(iter([config, audio]), metadata=(("x-request-id", "stream-ok"),))
        list(ok)
        assert ok.code() == grpc.StatusCode.OK
        assert ("x-request-id", "stream-ok") in ok.trailing_metadata()
        # Audio before the config: INVALID_ARGUMENT, the id still returned.
        bad = stub.StreamingRecognize(iter([audio]), metadata=(("x-request-id", "stream-bad"),))
        with pytest.raises(grpc.RpcError) as caught:
            list(bad)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert ("x-request-id", "stream-bad") in caught.value.trailing_metadata()
        # A server-streaming call (the long-form file path), without an id: one is made and returned.
        request = speech_pb2.StreamingRecognizeFileRequest(
            audio=audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=pcm(1.0), format=LINEAR16))
        )
        file_call = stub.StreamingRecognizeFile(request, timeout=120)
        list(file_call)
        made = dict(file_call.trailing_metadata())["x-request-id"]
        assert len(made) == 32
    ok_line = record_of(caplog, "stream-ok").access  # type: ignore[attr-defined]
    assert ok_line["method"] == "StreamingRecognize" and ok_line["status"] == "OK"
    assert ok_line["model"] == "tiny-whisper" and ok_line["peer"].startswith("ipv4:127.0.0.1")
    assert record_of(caplog, "stream-bad").access["status"] == "INVALID_ARGUMENT"  # type: ignore[attr-defined]
    assert record_of(caplog, made).access["method"] == "StreamingRecognizeFile"  # type: ignore[attr-defined]


def test_health_checks_log_at_debug_and_reflection_at_info(
    asr_server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    channel = grpc.insecure_channel(asr_server.target)
    health = health_pb2_grpc.HealthStub(channel)
    with caplog.at_level(logging.INFO, logger="pipelined.access"):
        _, call = health.Check.with_call(
            health_pb2.HealthCheckRequest(service=""), metadata=(("x-request-id", "probe-info"),)
        )
        assert ("x-request-id", "probe-info") in call.trailing_metadata()
    assert not [r for r in access_records(caplog) if r.access["request_id"] == "probe-info"]  # type: ignore[attr-defined]
    with caplog.at_level(logging.DEBUG, logger="pipelined.access"):
        health.Check(health_pb2.HealthCheckRequest(service=""), metadata=(("x-request-id", "probe-1"),))
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(
                health_pb2.HealthCheckRequest(service="no-such-model"),
                metadata=(("x-request-id", "probe-2"),),
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
            metadata=(("x-request-id", "reflect-1"),),
        )
        assert any(r.list_services_response.service for r in replies)
        assert ("x-request-id", "reflect-1") in replies.trailing_metadata()
    probe = record_of(caplog, "probe-1")
    assert probe.levelno == logging.DEBUG and probe.access["method"] == "Check"  # type: ignore[attr-defined]
    assert probe.access["status"] == "OK"  # type: ignore[attr-defined]
    assert record_of(caplog, "probe-2").access["status"] == "NOT_FOUND"  # type: ignore[attr-defined]
    reflected = record_of(caplog, "reflect-1")
    assert reflected.levelno == logging.INFO and reflected.access["method"] == "ServerReflectionInfo"  # type: ignore[attr-defined]
    assert reflected.access["status"] == "OK"  # type: ignore[attr-defined]


# ---- nothing the caller sent reaches the log

SECRET = "QUOKKA"  # in texts, names, parameters, audio bytes, tokens: never in any log line
ADMIN = "admin-token-0123456789abcdef"


@pytest.fixture(scope="module")
def verbose_server(
    tiny_whisper_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A server process logging everything (DEBUG, JSON, health checks at INFO), with tokens."""
    root = tmp_path_factory.mktemp("verbose")
    tokens = root / "tokens.yaml"
    tokens.write_text(yaml.safe_dump({"tokens": [{"name": "admin", "token": ADMIN}]}))
    config = {
        "workers": 1,
        "auth": {"tokens_file": str(tokens)},
        "logging": {"format": "json", "health_checks": True},
        "models": [
            {"name": "tiny-whisper", "task": "automatic-speech-recognition", "source": str(tiny_whisper_dir)},
            {
                "name": "tiny-sentiment",
                "task": "text-classification",
                "source": str(build_tiny_bert(root / "sentiment", "sequence")),
            },
        ],
    }
    path = root / "server.yaml"
    path.write_text(yaml.safe_dump(config))
    server = ServerProcess(["--config", str(path), "--log-level", "DEBUG"], root)
    server.wait_serving(Client(server.target, token=ADMIN))
    yield server
    server.stop()


def _calls_carrying_the_secret(server: ServerProcess) -> None:
    channel = grpc.insecure_channel(server.target)
    auth = (("authorization", f"Bearer {ADMIN}"),)
    text = text_pb2_grpc.TextServiceStub(channel)
    ok = text_pb2.ClassifyTextRequest(
        model="tiny-sentiment", inputs=[text_pb2.TextPairInput(text=f"a {SECRET} day")]
    )
    text.ClassifyText(ok, metadata=auth, timeout=60)
    failing: list[Any] = [
        # unknown model (NOT_FOUND, the name echoed to the caller only)
        lambda: text.ClassifyText(text_pb2.ClassifyTextRequest(model=SECRET), metadata=auth, timeout=60),
        # a wrong token, and a request id the server will not echo
        lambda: text.ClassifyText(
            ok,
            metadata=(("authorization", f"Bearer {SECRET}-{SECRET}"), ("x-request-id", f"{SECRET} !")),
            timeout=60,
        ),
    ]
    run = generic_pb2.RunRequest(task="text-classification", model="tiny-sentiment")
    encoder = ValueEncoder()
    run.inputs.CopyFrom(encoder.encode(SECRET))
    run.parameters.CopyFrom(encoder.encode({SECRET: 1}).struct_value)
    failing.append(lambda: generic_pb2_grpc.GenericServiceStub(channel).Run(run, metadata=auth, timeout=60))
    speech = speech_pb2_grpc.SpeechServiceStub(channel)
    undecodable = speech_pb2.RecognizeRequest(audio=audio_pb2.AudioInput(encoded=SECRET.encode() * 100))
    failing.append(lambda: speech.Recognize(undecodable, metadata=auth, timeout=60))
    for call in failing:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() != grpc.StatusCode.INTERNAL, caught.value.details()
    speech.Recognize(
        speech_pb2.RecognizeRequest(
            audio=audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=pcm(0.5), format=LINEAR16))
        ),
        metadata=auth,
        timeout=60,
    )
    config = speech_pb2.StreamingRecognizeRequest(
        streaming_config=speech_pb2.StreamingRecognitionConfig(audio_format=LINEAR16)
    )
    stream = speech.StreamingRecognize(
        iter([config, speech_pb2.StreamingRecognizeRequest(audio=SECRET.encode() * 1000)]), metadata=auth
    )
    list(stream)
    health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=30)
    channel.close()


def test_no_user_content_in_any_log_line(verbose_server: ServerProcess) -> None:
    _calls_carrying_the_secret(verbose_server)

    def last_call_logged() -> bool:
        """The health check after the stream: the server writes its log in batches (logs.py)."""
        log = verbose_server.log.read_text()
        stream = log.rfind('"method": "StreamingRecognize"')
        return stream >= 0 and log.rfind('"method": "Check"') > stream

    wait_for(last_call_logged, 30, "the last call's access log line")
    log = verbose_server.log.read_text()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    methods = {line.get("method") for line in lines if line.get("logger") == "pipelined.access"}
    assert {"ClassifyText", "Run", "Recognize", "StreamingRecognize", "Check"} <= methods, methods
    assert SECRET.lower() not in log.lower()
    assert ADMIN not in log
