"""How many live streams are open, per server, with the limit and the stream metrics' bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from ..errors import PipelinedError, QueueFull
from ..metrics import Metrics


@dataclass
class ActiveStreams:
    limit: int
    metrics: Metrics
    count: int = 0

    @contextlib.contextmanager
    def open(self, model: str) -> Iterator[None]:
        """Holds one stream slot; records how the stream ended (its status code)."""
        if self.count >= self.limit:
            self.metrics.streams_ended.labels(model, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
            raise QueueFull(
                f"{self.count} live streams are open (streaming.max_streams={self.limit}); retry later"
            )
        self.count += 1
        self.metrics.active_streams.labels(model).inc()
        code = grpc.StatusCode.OK
        try:
            yield
        except PipelinedError as exc:
            code = exc.code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = grpc.StatusCode.CANCELLED
            raise
        except BaseException:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self.count -= 1
            self.metrics.active_streams.labels(model).dec()
            self.metrics.streams_ended.labels(model, code.name).inc()
