"""A stream's responses waiting to be sent, bounded whether or not the client reads them.

The servicer sends from the outbox one response at a time, and a send waits while the client's
HTTP/2 window is full, so a client that stops reading would otherwise make the outbox (and the
server's memory) grow with every decode. Here a response that only carries an interim result is
replaced by the next one while it waits (an interim only matters until the next), and responses that
carry finals or speech events are never dropped: once more than `limit` of them wait, the stream ends
with RESOURCE_EXHAUSTED, naming the limit.

A client that reads nothing at all cannot receive that status: the response it does not read blocks the
send, and the status can only follow it. So the session drops such a stream once its end has waited
`idle_timeout_s` (`ended` tells when the end was queued; see StreamSession._drop_unread).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

from pipelined.v1 import speech_pb2

from ..errors import QueueFull


def _interim_only(item: Any) -> bool:
    return (
        isinstance(item, speech_pb2.StreamingRecognizeResponse)
        and not item.speech_event
        and all(not r.is_final for r in item.results)
    )


class Outbox:
    def __init__(self, limit: int, on_change: Callable[[int], object] = lambda delta: None) -> None:
        self.limit = limit
        self._items: deque[Any] = deque()
        self._ready = asyncio.Event()
        # Called with +1 / -1 as responses wait and leave (the server's gauge of unread responses).
        self._on_change = on_change
        # Interim responses replaced before they were sent (the client was not keeping up).
        self.merged = 0
        # Set once the stream's end (its last item: done or an error) is queued; `end` is that item.
        self.ended = asyncio.Event()
        self.end: Any = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Any) -> None:
        """Queues a response; raises QueueFull when finals back up beyond the limit."""
        if _interim_only(item) and self._items and _interim_only(self._items[-1]):
            self._items[-1] = item
            self.merged += 1
            return
        if _interim_only(item) and len(self._items) >= self.limit:
            self.merged += 1  # the next final says more than this interim would
            return
        if len(self._items) >= self.limit and isinstance(item, speech_pb2.StreamingRecognizeResponse):
            raise QueueFull(
                f"the client has not read {len(self._items)} responses of this stream "
                f"(streaming.max_unread_responses={self.limit}); read responses as they arrive"
            )
        self._items.append(item)
        self._on_change(1)
        self._ready.set()

    def put_control(self, item: Any) -> None:
        """The end of the stream or its error: always queued (one per stream)."""
        self._items.append(item)
        self._on_change(1)
        if not self.ended.is_set():
            self.end = item
        self.ended.set()
        self._ready.set()

    async def get(self) -> Any:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        self._on_change(-1)
        return self._items.popleft()

    def clear(self) -> None:
        """Drops what still waits (the stream ended without sending it)."""
        self._on_change(-len(self._items))
        self._items.clear()
