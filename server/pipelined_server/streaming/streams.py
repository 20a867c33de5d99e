"""How many live streams are open, per server and per client address, with the stream metrics' bookkeeping.

A stream holds its slot from its first moment, before its config arrives: a client opening streams
that never send one cannot get past `max_streams` (each times out after `idle_timeout_s`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import grpc

from ..errors import PipelinedError, QueueFull
from ..metrics import Metrics

# The model label of a stream that has not named its model yet.
PENDING = ""


def peer_host(peer: str) -> str:
    """'ipv4:127.0.0.1:5555' / 'ipv6:[::1]:5555' -> the address without its port (one client, many ports)."""
    kind, _, address = peer.partition(":")
    if kind in ("ipv4", "ipv6") and ":" in address:
        return address.rsplit(":", 1)[0]
    return peer


@dataclass
class Slot:
    """One open stream; `model` is set once its config names the model (the metrics' label)."""

    streams: ActiveStreams
    peer: str
    model: str = PENDING
    # False once the stream runs on a sibling worker, which counts it in the metrics (relay.py).
    counted: bool = True

    def name(self, model: str) -> None:
        metrics = self.streams.metrics
        metrics.active_streams.labels(self.model).dec()
        self.streams.by_model[self.model] -= 1
        self.model = model
        self.streams.by_model[model] += 1
        metrics.active_streams.labels(model).inc()

    def relayed(self) -> None:
        """The stream goes on in a sibling worker (relay.py), which counts it in the metrics; this slot
        still holds its place against this worker's limits."""
        self.streams.metrics.active_streams.labels(self.model).dec()
        self.counted = False


@dataclass
class ActiveStreams:
    limit: int
    per_peer: int
    metrics: Metrics
    # Told the model of each stream that closed, once it no longer counts.
    on_closed: Callable[[str], None] | None = None
    count: int = 0
    by_peer: Counter[str] = field(default_factory=Counter)
    by_model: Counter[str] = field(default_factory=Counter)

    @contextlib.contextmanager
    def open(
        self, peer: str, interrupted: Callable[[], grpc.StatusCode] = lambda: grpc.StatusCode.CANCELLED
    ) -> Iterator[Slot]:
        """Holds one stream slot; records how the stream ended (its status code). `interrupted` tells why
        gRPC cancelled the handler: the caller cancelled, or the stream's deadline passed."""
        host = peer_host(peer)
        if self.count >= self.limit:
            self._refused()
            raise QueueFull(
                f"{self.count} live streams are open (streaming.max_streams={self.limit}); retry later",
                retry_after_s=1.0,
            )
        if self.by_peer[host] >= self.per_peer:
            self._refused()
            raise QueueFull(
                f"{self.by_peer[host]} live streams are open from {host} "
                f"(streaming.max_streams_per_peer={self.per_peer}); close one first"
            )
        self.count += 1
        self.by_peer[host] += 1
        slot = Slot(self, host)
        self.by_model[slot.model] += 1
        self.metrics.active_streams.labels(slot.model).inc()
        code = grpc.StatusCode.OK
        try:
            yield slot
        except PipelinedError as exc:
            code = exc.code
            raise
        except (asyncio.CancelledError, GeneratorExit):
            code = interrupted()
            raise
        except BaseException:
            code = grpc.StatusCode.INTERNAL
            raise
        finally:
            self.count -= 1
            self.by_peer[host] -= 1
            self.by_model[slot.model] -= 1
            if not self.by_peer[host]:
                del self.by_peer[host]
            if slot.counted:
                self.metrics.active_streams.labels(slot.model).dec()
                self.metrics.streams_ended.labels(slot.model, code.name).inc()
            if self.on_closed is not None and slot.model != PENDING:
                self.on_closed(slot.model)

    def _refused(self) -> None:
        self.metrics.streams_ended.labels(PENDING, grpc.StatusCode.RESOURCE_EXHAUSTED.name).inc()
