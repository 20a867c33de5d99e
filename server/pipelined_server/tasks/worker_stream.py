"""Results produced on a model's worker thread, handed to the event loop one by one as they appear.

The work runs alone on a worker (scheduler.submit_call) with the replica that runs it, an `emit` that
queues one result for the caller, and a `stop` event set when the caller leaves, so the work can end
early and free the worker for the next request. It runs in the server process even where the model's
replicas run in processes of their own (`here=True`: `emit` must reach this event loop). Used by streamed
generation (tokens) and streamed long-form speech recognition (segments).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..registry import ModelInstance

_END = object()

Emit = Callable[[Any], None]
# work(pipe, emit, stop): runs on the worker thread with this replica `pipe`.
Work = Callable[[Any, Emit, threading.Event], None]


async def stream_from_worker(
    instance: ModelInstance, work: Work, timeout: float | None
) -> AsyncIterator[Any]:
    """Yields what `work` emits, in order; raises what it raised. Leaving early sets its stop event."""
    assert instance.scheduler is not None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def emit(item: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, item)

    def run(pipe: Any) -> None:
        try:
            if stop.is_set():  # the caller left while the job was queued
                return
            work(pipe, emit, stop)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    job = asyncio.ensure_future(instance.scheduler.submit_call(run, timeout=timeout, here=True))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                # The job ended (or failed before it started): flush what it queued, then its outcome.
                while not queue.empty():
                    item = queue.get_nowait()
                    if item is not _END:
                        yield item
                job.result()
                return
            item = getter.result()
            if item is _END:
                await job
                return
            yield item
    finally:
        stop.set()
        if not job.done():
            job.cancel()
