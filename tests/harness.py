"""Runs a real pipelined server on a random localhost port in a background thread, for tests and benchmarks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

from pipelined_server.app import App
from pipelined_server.config import ServerConfig


class ServerThread:
    """A server with its own event loop; `target` is its address."""

    def __init__(self, config: ServerConfig, wait_loaded: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="test-server")
        self._thread.start()
        self.app: App = self.run(self._build(config))
        self.target = f"127.0.0.1:{self.app.port}"
        if wait_loaded:
            self.run(self.app.wait_loaded())

    async def _build(self, config: ServerConfig) -> App:
        app = App.build(config)
        await app.start()
        return app

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 600) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def metric(self, name: str, **labels: str) -> float:
        return self.app.metrics.value(name, labels)

    def stop(self, grace_s: float = 5.0) -> None:
        self.run(self.app.drain(grace_s))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def concurrently(fn: Callable[[Any], Any], inputs: list[Any]) -> list[Any]:
    """Calls fn on every input from its own thread, all released together, so the server can batch them."""
    results: list[Any] = [None] * len(inputs)
    barrier = threading.Barrier(len(inputs))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn(inputs[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
