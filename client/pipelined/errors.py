"""gRPC errors as typed exceptions that name the status code and carry the server's message."""

from __future__ import annotations

import grpc


class PipelinedError(Exception):
    """A failed call: `code` is the gRPC status, `message` the server's explanation."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    # Seconds after which the server said a retry may succeed (its `retry-after-ms` trailer), if it did.
    retry_after_s: float | None = None

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        if code is not None:
            self.code = code
        super().__init__(f"{self.code.name}: {message}")
        self.message = message


class InvalidArgument(PipelinedError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(PipelinedError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class Unavailable(PipelinedError):
    code = grpc.StatusCode.UNAVAILABLE


class StreamInterrupted(Unavailable):
    """A live stream broke: its server went away or is draining. The SDK retries unary calls on another
    server by itself, never a live stream (its audio is sent once; gRPC cannot replay it), so this is
    raised instead. `resume_from_s`: where the audio no final result covered starts, in seconds from
    the start of the stream; `stream(..., reconnect=N)` opens a new stream from there by itself."""

    def __init__(self, message: str, resume_from_s: float) -> None:
        super().__init__(f"live stream interrupted ({message}); resume from {resume_from_s:.2f} s")
        self.resume_from_s = resume_from_s


class ResourceExhausted(PipelinedError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExceeded(PipelinedError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Cancelled(PipelinedError):
    code = grpc.StatusCode.CANCELLED


class FailedPrecondition(PipelinedError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unimplemented(PipelinedError, NotImplementedError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(PipelinedError):
    code = grpc.StatusCode.INTERNAL


class PermissionDenied(PipelinedError, PermissionError):
    code = grpc.StatusCode.PERMISSION_DENIED


class Aborted(PipelinedError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(PipelinedError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unauthenticated(PipelinedError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE: dict[grpc.StatusCode, type[PipelinedError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        Cancelled,
        FailedPrecondition,
        Unimplemented,
        Internal,
        PermissionDenied,
        Aborted,
        OutOfRange,
        Unauthenticated,
    )
}


def from_rpc_error(error: grpc.RpcError) -> PipelinedError:
    """The typed exception for a grpc.RpcError (or grpc.aio.AioRpcError)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    cls = _BY_CODE.get(code, PipelinedError)
    # An empty server message never shows as an empty string: fall back to the status's description.
    details = details or (code.value[1] if isinstance(code, grpc.StatusCode) else "") or code.name
    exc = cls(details, code) if cls is PipelinedError else cls(details)
    exc.retry_after_s = retry_after_s(error)
    return exc


def retry_after_s(error: grpc.RpcError) -> float | None:
    """The server's retry hint (trailing metadata `retry-after-ms`), in seconds, if it sent one."""
    trailers = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == "retry-after-ms":
            try:
                return int(value) / 1000
            except ValueError:
                return None
    return None
