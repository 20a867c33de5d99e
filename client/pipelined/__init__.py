"""pipelined SDK: `Client("host:port").pipeline(task)` behaves like `transformers.pipeline(task)`."""

from .client import Client
from .errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    PipelinedError,
    ResourceExhausted,
    Unavailable,
    Unimplemented,
)

__version__ = "0.1.0"
__all__ = [
    "Cancelled",
    "Client",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "PipelinedError",
    "ResourceExhausted",
    "Unavailable",
    "Unimplemented",
]
