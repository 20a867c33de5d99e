"""services/calls.py on its own: which status a handler interrupted by gRPC ends with.

gRPC cancels a handler both when its caller cancels and when its deadline passes; the requests metric and the
access log tell the two apart by the time the call had left. Here the boundary is checked exactly, with a
context that answers only `time_remaining()` (the one thing `_ended_early` asks); the two outcomes away from
the boundary are checked through a real server in tests/e2e/test_server_failures.py.
"""

from __future__ import annotations

import grpc
import pytest
from pipelined_server.services.calls import DEADLINE_SLACK_S, _ended_early


class Remaining:
    """The part of grpc.aio.ServicerContext that `_ended_early` reads."""

    def __init__(self, seconds: float | None, code: grpc.StatusCode | None = None) -> None:
        self.seconds = seconds
        self._code = code

    def time_remaining(self) -> float | None:
        return self.seconds

    def code(self) -> grpc.StatusCode | None:
        return self._code


@pytest.mark.parametrize(
    ("remaining", "code"),
    [
        (None, grpc.StatusCode.CANCELLED),  # no deadline: only the caller can have ended it
        (30.0, grpc.StatusCode.CANCELLED),
        (1.0, grpc.StatusCode.CANCELLED),
        (0.5, grpc.StatusCode.CANCELLED),  # cancelled half a second before its deadline
        (DEADLINE_SLACK_S + 1e-6, grpc.StatusCode.CANCELLED),
        # The client's own timer fires a few ms early and cancels: within the slack, that is the deadline.
        (DEADLINE_SLACK_S, grpc.StatusCode.DEADLINE_EXCEEDED),
        (0.006, grpc.StatusCode.DEADLINE_EXCEEDED),
        (0.0, grpc.StatusCode.DEADLINE_EXCEEDED),
        (-0.25, grpc.StatusCode.DEADLINE_EXCEEDED),
    ],
)
def test_an_interrupted_call_is_deadline_exceeded_only_near_or_past_its_deadline(
    remaining: float | None, code: grpc.StatusCode
) -> None:
    assert _ended_early(Remaining(remaining)) is code  # type: ignore[arg-type]


@pytest.mark.parametrize("remaining", [None, 30.0, 0.0])
def test_a_call_the_server_dropped_ends_with_the_code_it_set(remaining: float | None) -> None:
    # A live stream whose client reads nothing: the server set RESOURCE_EXHAUSTED, then cancelled it.
    dropped = Remaining(remaining, grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert _ended_early(dropped) is grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[arg-type]
    # OK (nothing set yet, as grpc reports it) is no reason.
    assert _ended_early(Remaining(remaining, grpc.StatusCode.OK)) is not grpc.StatusCode.OK  # type: ignore[arg-type]
