"""Typed errors raised inside the server; `grpc/status.py` maps them to gRPC status codes in one place."""

from __future__ import annotations

import grpc


class PipelinedError(Exception):
    """Base class: every error a caller should see carries its gRPC status code."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        # When a retry may succeed: sent as the `retry-after-ms` trailing metadata (clients read it).
        self.retry_after_s = retry_after_s


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


class OutOfRange(PipelinedError):
    """A stream went past a configured length (e.g. streaming.max_stream_duration_s)."""

    code = grpc.StatusCode.OUT_OF_RANGE


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
