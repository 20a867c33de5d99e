"""TLS, mutual TLS and bearer tokens against a real server, with certificates made at test time."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from certs import Pki, make_pki
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import ServerProcess, ServerThread
from paths import REPO
from pipelined import Client
from pipelined import aio as pipelined_aio
from pipelined.errors import PermissionDenied, Unauthenticated, Unavailable, Unimplemented
from pipelined.v1 import models_pb2, models_pb2_grpc, text_pb2, text_pb2_grpc
from pipelined_server.config import AuthConfig, ModelSpec, ServerConfig, TLSConfig
from tiny_text_models import build_tiny_bert

TASK = "text-classification"
ADMIN = "admin-token-0123456789"
ONLY_A = "only-a-token-0123456789"
TOKENS = f"""tokens:
  - {{name: admin, token: {ADMIN}}}
  - {{name: only-a, token: {ONLY_A}, models: [tiny-a]}}
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-sentiment"), "sequence")


def _specs(model_dir: Path) -> tuple[ModelSpec, ...]:
    return (
        ModelSpec(name="tiny-a", task=TASK, source=str(model_dir), default=True),
        ModelSpec(name="tiny-b", task=TASK, source=str(model_dir)),
    )


@pytest.fixture(scope="module")
def tls_server(pki: Pki, model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """TLS (no client certificates) and tokens, one of them limited to tiny-a."""
    tokens = tmp_path_factory.mktemp("auth") / "tokens.yaml"
    tokens.write_text(TOKENS)
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        tls=TLSConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key)),
        auth=AuthConfig(tokens_file=str(tokens)),
        models=_specs(model_dir),
    )
    server = ServerThread(config)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mtls_server(pki: Pki, model_dir: Path) -> Iterator[ServerThread]:
    """Mutual TLS: a client certificate signed by the test CA is required; no tokens."""
    tls = TLSConfig(cert_file=str(pki.server_cert), key_file=str(pki.server_key), client_ca_file=str(pki.ca))
    server = ServerThread(
        ServerConfig(
            host="127.0.0.1", port=0, metrics_port=0, health_port=0, tls=tls, models=_specs(model_dir)
        )
    )
    yield server
    server.stop()


def classify(client: Client, model: str = "tiny-a") -> Any:
    return client.pipeline(TASK, model=model)("a fine day")


# ---- TLS
def test_tls_with_the_servers_ca_works(tls_server: ServerThread, pki: Pki) -> None:
    with Client(tls_server.target, ca_file=str(pki.ca), token=ADMIN, timeout=30) as client:
        assert classify(client)[0]["label"]


def test_a_client_trusting_another_ca_cannot_connect(tls_server: ServerThread, pki: Pki) -> None:
    client = Client(tls_server.target, ca_file=str(pki.other_ca), token=ADMIN, timeout=10)
    with client, pytest.raises(Unavailable):
        client.models()


def test_a_plaintext_client_cannot_talk_to_a_tls_server(tls_server: ServerThread) -> None:
    with Client(tls_server.target, token=ADMIN, timeout=10) as client, pytest.raises(Unavailable):
        client.models()


# ---- mutual TLS
def test_mtls_with_a_client_certificate_works(mtls_server: ServerThread, pki: Pki) -> None:
    client = Client(
        mtls_server.target,
        ca_file=str(pki.ca),
        cert_file=str(pki.client_cert),
        key_file=str(pki.client_key),
        timeout=30,
    )
    with client:
        assert classify(client)[0]["label"]


def test_mtls_refuses_a_client_without_a_certificate(mtls_server: ServerThread, pki: Pki) -> None:
    with Client(mtls_server.target, ca_file=str(pki.ca), timeout=10) as client, pytest.raises(Unavailable):
        client.models()


def test_mtls_refuses_a_certificate_from_another_ca(mtls_server: ServerThread, pki: Pki) -> None:
    client = Client(
        mtls_server.target,
        ca_file=str(pki.ca),
        cert_file=str(pki.other_client_cert),
        key_file=str(pki.other_client_key),
        timeout=10,
    )
    with client, pytest.raises(Unavailable):
        client.models()


def test_probes_use_the_plaintext_health_port(mtls_server: ServerThread) -> None:
    """Kubernetes' gRPC probes speak no TLS: health alone answers in plaintext on `health_port`."""
    with Client(f"127.0.0.1:{mtls_server.app.health_port}", timeout=30) as probe:
        assert probe.health() == "SERVING"
        assert probe.health("tiny-a") == "SERVING"
        with pytest.raises(Unimplemented):
            probe.models()


# ---- tokens
def test_a_missing_or_wrong_token_is_unauthenticated(tls_server: ServerThread, pki: Pki) -> None:
    for token in (None, "not-a-token-0123456789", ADMIN[:-1], ADMIN + "x"):
        with Client(tls_server.target, ca_file=str(pki.ca), token=token, timeout=30) as client:
            with pytest.raises(Unauthenticated):
                client.models()
            with pytest.raises(Unauthenticated):
                classify_raw(client, "tiny-a")


def classify_raw(client: Client, model: str) -> Any:
    from pipelined._transport import call

    request = text_pb2.ClassifyTextRequest(model=model, inputs=[text_pb2.TextPairInput(text="a fine day")])
    return call(client.text.ClassifyText, request, 30)


def test_health_needs_no_token(tls_server: ServerThread, pki: Pki) -> None:
    with Client(tls_server.target, ca_file=str(pki.ca), timeout=30) as client:
        assert client.health() == "SERVING"
        assert client.health("tiny-a") == "SERVING"


def test_reflection_follows_auth(tls_server: ServerThread, pki: Pki) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.secure_channel(tls_server.target, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        metadata = (("authorization", f"Bearer {ADMIN}"),)
        (answer,) = stub.ServerReflectionInfo(iter([request]), timeout=10, metadata=metadata)
        names = {s.name for s in answer.list_services_response.service}
        assert "pipelined.v1.TextService" in names


def test_a_token_limited_to_one_model(tls_server: ServerThread, pki: Pki) -> None:
    computed_before = tls_server.metric("pipelined_pipeline_items_total", model="tiny-b")
    with Client(tls_server.target, ca_file=str(pki.ca), token=ONLY_A, timeout=30) as client:
        assert classify(client, "tiny-a")[0]["label"]
        assert [m["name"] for m in client.models()] == ["tiny-a"]
        with pytest.raises(PermissionDenied, match="tiny-b"):
            client.model("tiny-b")
        with pytest.raises(PermissionDenied, match="tiny-b"):
            classify_raw(client, "tiny-b")
    with Client(tls_server.target, ca_file=str(pki.ca), token=ADMIN, timeout=30) as client:
        assert sorted(m["name"] for m in client.models()) == ["tiny-a", "tiny-b"]
        assert classify(client, "tiny-b")[0]["label"]
    # The refused call computed nothing: only the admin's call reached tiny-b's pipeline.
    assert tls_server.metric("pipelined_pipeline_items_total", model="tiny-b") == computed_before + 1


def test_the_asyncio_client_carries_credentials_and_token(tls_server: ServerThread, pki: Pki) -> None:
    async def main() -> tuple[Any, str]:
        async with pipelined_aio.Client(
            tls_server.target, ca_file=str(pki.ca), token=ONLY_A, timeout=30
        ) as client:
            result = await client.pipeline(TASK, model="tiny-a")("a fine day")
            try:
                await client.model("tiny-b")
            except PermissionDenied as error:
                return result, error.code.name
            return result, "OK"

    result, refused = asyncio.run(main())
    assert result[0]["label"] and refused == "PERMISSION_DENIED"


# ---- access log and request ids
def test_access_log_line_and_request_id(
    tls_server: ServerThread, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    request = text_pb2.ClassifyTextRequest(
        model="tiny-a", inputs=[text_pb2.TextPairInput(text="SECRET-PAYLOAD")]
    )
    with (
        caplog.at_level(logging.INFO, logger="pipelined.access"),
        grpc.secure_channel(tls_server.target, credentials) as channel,
    ):
        stub = text_pb2_grpc.TextServiceStub(channel)
        metadata = (("authorization", f"Bearer {ONLY_A}"), ("x-request-id", "req-42"))
        _, call = stub.ClassifyText.with_call(request, metadata=metadata, timeout=30)
        assert ("x-request-id", "req-42") in call.trailing_metadata()
        # No id from the caller: one is made, and returned even when the call fails.
        with pytest.raises(grpc.RpcError) as refused:
            stub.ClassifyText(text_pb2.ClassifyTextRequest(model="tiny-b"), metadata=metadata[:1], timeout=30)
        made = dict(refused.value.trailing_metadata())["x-request-id"]
        assert len(made) == 32
    lines = [r for r in caplog.records if r.name == "pipelined.access"]
    ok = next(r.access for r in lines if r.access["request_id"] == "req-42")  # type: ignore[attr-defined]
    assert ok["method"] == "ClassifyText" and ok["model"] == "tiny-a" and ok["status"] == "OK"
    assert ok["principal"] == "only-a" and ok["peer"].startswith("ipv4:127.0.0.1")
    denied = next(r.access for r in lines if r.access["request_id"] == made)  # type: ignore[attr-defined]
    assert denied["status"] == "PERMISSION_DENIED"
    from pipelined_server.logs import JsonFormatter

    rendered = [JsonFormatter().format(r) for r in lines]
    assert all("SECRET-PAYLOAD" not in line and ADMIN not in line and ONLY_A not in line for line in rendered)
    assert json.loads(rendered[0])["logger"] == "pipelined.access"


def test_made_up_names_do_not_grow_the_metric_series(tls_server: ServerThread, pki: Pki) -> None:
    """4,000 calls naming made-up models once added 80,000 series; now every made-up name is `unknown`."""
    from pipelined.v1 import generic_pb2, generic_pb2_grpc

    def series() -> int:
        return sum(len(m.samples) for m in tls_server.app.metrics.registry.collect())

    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    metadata = (("authorization", f"Bearer {ADMIN}"),)
    with grpc.secure_channel(tls_server.target, credentials) as channel:
        models = models_pb2_grpc.ModelsServiceStub(channel)
        generic = generic_pb2_grpc.GenericServiceStub(channel)

        def made_up(i: int) -> None:
            with pytest.raises(grpc.RpcError):
                models.GetModel(models_pb2.GetModelRequest(name=f"nope-{i}"), metadata=metadata, timeout=30)
            with pytest.raises(grpc.RpcError):
                generic.Run(
                    generic_pb2.RunRequest(task=f"task-{i}", model=f"m-{i}"), metadata=metadata, timeout=30
                )

        made_up(-1)  # the first refusals create their `unknown` series
        before = series()
        for i in range(500):
            made_up(i)
    assert series() == before


# ---- the command line: flags, SIGHUP reload, metrics over HTTPS on the configured host
@pytest.fixture()
def server_process(pki: Pki, model_dir: Path, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS)
    args = ["--model", str(model_dir), "--task", TASK, "--auth-tokens-file", str(tokens)]
    args += ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    server = ServerProcess(args, tmp_path, metrics_scheme="https")
    yield server, tokens
    server.stop()


def cli(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PIPELINED_TOKEN"}
    if token:
        env["PIPELINED_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "pipelined.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_server_flags_sighup_reload_and_cli(server_process: Any, pki: Pki) -> None:
    server, tokens = server_process
    target = server.target
    with Client(target, ca_file=str(pki.ca), timeout=30) as probe:
        server.wait_serving(probe)

    # The CLI: --ca-file and the token from $PIPELINED_TOKEN or --token; no token: exit 5.
    listed = cli("models", "--target", target, "--ca-file", str(pki.ca), token=ADMIN)
    assert listed.returncode == 0, listed.stderr
    refused = cli("models", "--target", target, "--ca-file", str(pki.ca))
    assert refused.returncode == 5 and "UNAUTHENTICATED" in refused.stderr
    assert cli("--ca-file", str(pki.ca), "--token", ADMIN, "models", "--target", target).returncode == 0

    # Metrics: HTTPS with the server's certificate, on the configured host only.
    context = ssl.create_default_context(cafile=str(pki.ca))
    assert server.metric("pipelined_requests_total", context, method="ListModels") >= 1

    # SIGHUP swaps the tokens: the new one works, the removed one stops working, without a restart.
    new = "rotated-token-0123456789"
    tokens.write_text(f"tokens:\n  - {{name: rotated, token: {new}}}\n")
    server.process.send_signal(signal.SIGHUP)
    with Client(target, ca_file=str(pki.ca), token=new, timeout=30) as client:
        deadline = time.monotonic() + 60
        while True:
            try:
                client.models()
                break
            except Unauthenticated:
                assert time.monotonic() < deadline, "SIGHUP did not reload the tokens"
                time.sleep(0.1)
    with (
        Client(target, ca_file=str(pki.ca), token=ADMIN, timeout=30) as client,
        pytest.raises(Unauthenticated),
    ):
        client.models()
    assert server.process.poll() is None


def test_a_bad_tokens_file_on_reload_keeps_the_tokens_in_force(tmp_path: Path) -> None:
    from pipelined_server.security import TokenStore

    path = tmp_path / "tokens.yaml"
    path.write_text(TOKENS)
    store = TokenStore(path)
    path.write_text("tokens: [{name: short, token: x}]\n")
    assert not store.reload()
    assert store.grant(f"Bearer {ADMIN}") is not None
    assert store.grant(f"bearer {ONLY_A}") is not None
    assert store.grant(ADMIN) is None and store.grant(f"Basic {ADMIN}") is None
