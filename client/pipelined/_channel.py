"""How a client connects: TLS and bearer-token credentials, load balancing over every address of a target,
retries of unary calls, keepalive. One builder for the synchronous and the asyncio client.

Load balancing and retries are gRPC's own, through the channel's service config: a target resolving to
several addresses (`dns:///pipelined-headless.ns.svc:50051`, `ipv4:10.0.0.1:50051,10.0.0.2:50051`) gets
one connection per address and calls spread round-robin; a unary call that fails UNAVAILABLE (a replica
gone) or RESOURCE_EXHAUSTED (a full queue; the server's `grpc-retry-pushback-ms` hint sets the pause, a
negative hint forbids the retry) is retried with exponential backoff, on the next address. Streaming
calls are not retried: a live stream's audio cannot be replayed by gRPC (see `streaming.resume_stream`).
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from ._transport import CHANNEL_OPTIONS
from .v1 import (
    audio_tasks_pb2,
    generic_pb2,
    models_pb2,
    multimodal_pb2,
    speech_pb2,
    text_pb2,
    vision_pb2,
)

# Keepalive within the server's enforcement (server `grpc.min_ping_interval_s`, 10 s by default): a ping
# every 30 s, also with no call open, notices a dead server or a dropped connection within ~40 s
# instead of the OS's hours.
KEEPALIVE_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
MAX_MESSAGE_BYTES = dict(CHANNEL_OPTIONS)["grpc.max_send_message_length"]
RETRY_POLICY = {
    # The first attempt and up to three retries, each after a random pause of up to 0.05 s, 0.1 s, 0.2 s
    # (gRPC's jittered exponential backoff): a replica that died drops out of the round-robin at its
    # first failure, so the retry lands on another at once, and a server that is down for good is
    # reported (UNAVAILABLE, with its address) within ~0.35 s rather than at the caller's deadline.
    # A full queue's pushback (500 ms) replaces the backoff.
    "maxAttempts": 4,
    "initialBackoff": "0.05s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED"],
}
_PROTOS = (speech_pb2, models_pb2, text_pb2, vision_pb2, multimodal_pb2, audio_tasks_pb2, generic_pb2)


def unary_methods() -> list[dict[str, str]]:
    """Every unary-unary method of the pipelined services (and the health check): the calls that may be
    retried, since their request is whole at the client."""
    names = [{"service": "grpc.health.v1.Health", "method": "Check"}]
    for module in _PROTOS:
        for service in module.DESCRIPTOR.services_by_name.values():
            names += [
                {"service": service.full_name, "method": m.name}
                for m in service.methods
                if not m.client_streaming and not m.server_streaming
            ]
    return names


def service_config() -> str:
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "methodConfig": [{"name": unary_methods(), "retryPolicy": RETRY_POLICY}],
            # Retries stop while more than half of the recent calls failed: a dead service is not
            # hammered with five times its traffic.
            "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.1},
        }
    )


def channel_options() -> list[tuple[str, Any]]:
    return [
        *CHANNEL_OPTIONS,
        *KEEPALIVE_OPTIONS,
        ("grpc.service_config", service_config()),
        # The service config above is the one used: none is taken from DNS TXT records.
        ("grpc.service_config_disable_resolution", 1),
        ("grpc.enable_retries", 1),
        # A request larger than the retry buffer is committed when sent, so never retried: gRPC's
        # default (256 KiB) would leave most audio uploads without retries. The buffer references the
        # serialized request the call holds anyway; it is released when the response starts.
        ("grpc.per_rpc_retry_buffer_size", MAX_MESSAGE_BYTES),
    ]


@dataclass(frozen=True)
class Security:
    """TLS files and a bearer token. ca_file alone: TLS, server checked against that CA (none of the
    four: plaintext); cert_file and key_file: a client certificate (mutual TLS); token: sent as
    `authorization: Bearer <token>` on every call."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    token: str | None = None
    # TLS with the system's root CAs, without a ca_file (a server with a public certificate).
    tls: bool = False

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("cert_file and key_file go together (a client certificate and its key)")

    @property
    def secure(self) -> bool:
        return bool(self.tls or self.ca_file or self.cert_file)

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca_file),
            private_key=read(self.key_file),
            certificate_chain=read(self.cert_file),
        )

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()


def open_channel(target: str, security: Security) -> grpc.Channel:
    options = channel_options()
    if security.secure:
        channel = grpc.secure_channel(target, security.credentials(), options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    if security.token:
        channel = grpc.intercept_channel(channel, _Metadata(security.metadata()))
    return channel


def open_aio_channel(target: str, security: Security) -> grpc.aio.Channel:
    options = channel_options()
    interceptors = _aio_interceptors(security.metadata()) if security.token else None
    if security.secure:
        return grpc.aio.secure_channel(
            target, security.credentials(), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)


def _with_metadata(details: Any, extra: Sequence[tuple[str, str]], cls: Any) -> Any:
    metadata = [*(details.metadata or ()), *extra]
    fields = {name: getattr(details, name, None) for name in cls._fields}
    return cls(**{**fields, "metadata": metadata})


# grpc.ClientCallDetails is an interface with no constructor: a namedtuple carrying its fields.
_DetailsFields = namedtuple(  # noqa: PYI024
    "_DetailsFields", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
)


class _Details(_DetailsFields, grpc.ClientCallDetails):
    pass


class _Metadata(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every call of a synchronous channel."""

    def __init__(self, extra: Sequence[tuple[str, str]]) -> None:
        self.extra = extra

    def _details(self, details: Any) -> Any:
        return _with_metadata(details, self.extra, _Details)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _aio_interceptors(extra: Sequence[tuple[str, str]]) -> list[Any]:
    """The asyncio twin of `_Metadata`: one interceptor per call shape (grpc.aio dispatches by class)."""

    def details_of(details: Any) -> Any:
        return _with_metadata(details, extra, grpc.aio.ClientCallDetails)

    class UnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
        async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(details_of(details), request)

    class UnaryStream(grpc.aio.UnaryStreamClientInterceptor):
        async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return await continuation(details_of(details), request)

    class StreamUnary(grpc.aio.StreamUnaryClientInterceptor):
        async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return await continuation(details_of(details), requests)

    class StreamStream(grpc.aio.StreamStreamClientInterceptor):
        async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return await continuation(details_of(details), requests)

    return [UnaryUnary(), UnaryStream(), StreamUnary(), StreamStream()]
