"""Typed errors raised inside the server; `grpc/status.py` maps them to gRPC status codes in one place."""

from __future__ import annotations

import grpc


class PipelinedError(Exception):
    """Base class: every error a caller should see carries its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PipelinedError):
    """The request itself is wrong: undecodable audio, out-of-range option, payload too large."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class PermissionDenied(PipelinedError):
    """The request asks for something the server's configuration forbids (e.g. fetching a URL)."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ModelNotFound(PipelinedError):
    code = grpc.StatusCode.NOT_FOUND


class ModelNotReady(PipelinedError):
    """The model exists but is still loading, failed to load, or the server is draining."""

    code = grpc.StatusCode.UNAVAILABLE


class QueueFull(PipelinedError):
    """A queue or a slot pool is full now: worth retrying shortly, on this replica or another."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    # The server's retry hint (`grpc-retry-pushback-ms`, honoured by the SDK's retry policy); any other
    # RESOURCE_EXHAUSTED (a request over a per-request budget) says "do not retry".
    retry_after_s: float = 0.5


class DeadlineExpired(PipelinedError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(PipelinedError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(PipelinedError):
    """The call is well formed but not allowed in this state (e.g. a second streaming config)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(PipelinedError):
    code = grpc.StatusCode.UNIMPLEMENTED


class ConfigError(Exception):
    """A bad configuration file or flag; raised at start-up, names the field."""
