"""The live stream's request reader (streaming/session.py IdleGuard): every read it starts is awaited or
its outcome retrieved, whoever ends the wait (no gRPC: an async generator stands in for the requests)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pipelined_server.errors import DeadlineExpired
from pipelined_server.streaming.session import IdleGuard


async def _requests(release: asyncio.Event) -> AsyncIterator[Any]:
    """Sends nothing until `release`, then half-closes (StopAsyncIteration for the pending read)."""
    await release.wait()
    return
    yield  # an async generator


def _unretrieved(scenario: Any) -> list[dict[str, Any]]:
    """What the loop reported as never retrieved while `scenario(release)` ran and after it."""
    reported: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: reported.append(context))
        release = asyncio.Event()
        await scenario(release)
        release.set()  # the client half-closes after the server stopped waiting
        for _ in range(5):
            await asyncio.sleep(0)
        gc.collect()  # asyncio reports an unretrieved exception when the task is collected

    asyncio.run(main())
    gc.collect()
    return reported


def test_a_session_cancelled_while_reading_leaves_no_unretrieved_read() -> None:
    """The caller leaves (the session task is cancelled) while the guard waits for a request; the read it
    started ends later with StopAsyncIteration. Was: "Task exception was never retrieved"."""

    async def scenario(release: asyncio.Event) -> None:
        guard = IdleGuard(_requests(release), timeout_s=60)
        reading = asyncio.ensure_future(guard.next())
        await asyncio.sleep(0.01)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading

    assert _unretrieved(scenario) == []


def test_an_idle_timeout_and_a_drain_leave_no_unretrieved_read() -> None:
    async def idle(release: asyncio.Event) -> None:
        with pytest.raises(DeadlineExpired, match="streaming.idle_timeout_s"):
            await IdleGuard(_requests(release), timeout_s=0.01).next()

    async def drain(release: asyncio.Event) -> None:
        draining = asyncio.Event()
        guard = IdleGuard(_requests(release), timeout_s=60, draining=draining)
        reading = asyncio.ensure_future(guard.next())
        await asyncio.sleep(0.01)
        draining.set()
        assert await reading is None and guard.drained

    assert _unretrieved(idle) == []
    assert _unretrieved(drain) == []
