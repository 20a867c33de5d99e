"""Live streams that one worker cannot admit, relayed to a sibling worker that can.

With several workers on one port (workers.py) the kernel gives each *connection* to one worker, and each
worker admits streams against its own replicas (admission.py). A client cannot choose its worker, and a
retry on the same channel lands on the same one. Measured before this (bench/asr_streaming.py, tiny.en,
2 workers, 2-core machine): of 2 real-time streams, 1 was refused while the server used 0.53 of its 2 cores;
both connections had landed on one worker, and the other worker sat idle.

So each worker publishes its stream headroom per model in a directory the supervisor makes for its workers
(private to the server's user), and listens on a Unix socket there as well. A worker that must refuse a
stream asks the directory for a sibling with headroom for the model and forwards the stream to it: the
config it read, then the client's requests as they come, and the sibling's responses back, statuses and
retry hints included. The sibling runs its own admission (two relays racing for its last slot: it refuses
one, and that refusal is what the client sees), decodes, and records the call: metrics, the access log
line with the client's address and request id; the relaying worker only counts the relay
(`pipelined_streams_relayed_total`), so every stream counts once in the supervisor's totals. A relayed
stream is never relayed again.

What the relaying worker still does: it holds the stream's slot against its own `max_streams` and per-peer
limits, applies its idle timeout and drain to the client's side (a drain half-closes the relayed stream,
which flushes its finals, as a local stream would), and copies each message once each way through its
event loop.

Measured with it (bench/asr_streaming.py --minutes 5, tiny.en, 2 workers, 2 cores, one run): 2 streams none
refused; 4 streams none refused (1 relayed), final lag p95 1.85 s; 8 streams 6 served (4 relayed) and 2
refused, p95 2.21 s, max 4.67 s. Before it, 1 of 2, 1 of 4 and 5 of 8 streams were refused.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
from pipelined.v1 import speech_pb2, speech_pb2_grpc

from ..errors import PipelinedError


class Requests(Protocol):
    """What reads a stream's requests for the relay: session.IdleGuard (its idle timeout and drain)."""

    async def next(self) -> speech_pb2.StreamingRecognizeRequest | None: ...


log = logging.getLogger(__name__)

# Set by the supervisor for its workers (workers.py): the shared directory, and how many workers there are.
DIR_ENV = "PIPELINED_SIBLINGS_DIR"
COUNT_ENV = "PIPELINED_WORKER_COUNT"
# The metadata that marks a relayed call and carries its client's address. Trusted only on a call that
# came over the Unix socket, which only the server's own processes can reach.
RELAYED_FOR_KEY = "x-pipelined-relayed-for"
# In the headers a sibling sends as its handler takes a relayed stream (before its admission).
TAKEN_KEY = "x-pipelined-relay-taken"
# The relay's channel to a sibling reads a response only when the client has taken the one before: with
# gRPC's default flow control (BDP probing) a relay whose client stopped reading would hold megabytes of
# the sibling's responses (thousands) before the sibling saw it; without it the sibling's own outbox and
# its bound (streaming.max_unread_responses) govern a relayed stream exactly as a local one. The relay
# carries a few small responses per second, which a window this small does not slow.
_CHANNEL_OPTIONS = (("grpc.http2.bdp_probe", 0), ("grpc.http2.lookahead_bytes", 1))
# Metadata gRPC sets itself on every call, not forwarded.
_TRANSPORT_KEYS = frozenset({"user-agent", "te", "content-type", "grpc-accept-encoding", "grpc-timeout"})


def forwarded_metadata(metadata: Sequence[tuple[str, Any]], peer: str) -> tuple[tuple[str, Any], ...]:
    """The client's metadata (its token, request id) for the sibling, with the client's address; a relay
    mark the client sent itself is dropped, so that it cannot pose as another address."""
    kept = [(k, v) for k, v in metadata if not k.startswith(":") and k not in _TRANSPORT_KEYS]
    return (*((k, v) for k, v in kept if k != RELAYED_FOR_KEY), (RELAYED_FOR_KEY, peer))


def forwarded_peer(peer: str, metadata: Sequence[tuple[str, Any]] | None) -> str | None:
    """The client's address of a relayed call, or None for a call straight from a client."""
    if not peer.startswith("unix:") or not metadata:
        return None
    for key, value in metadata:
        if key == RELAYED_FOR_KEY:
            return str(value)
    return None


class NotTaken(Exception):
    """The sibling's handler never took the relayed stream: the worker's own refusal stands."""


class Relayed(PipelinedError):
    """The status a sibling ended a relayed stream with, passed on unchanged."""

    def __init__(self, code: grpc.StatusCode, message: str, retry_after_s: float | None) -> None:
        super().__init__(message, retry_after_s)
        self.code = code


@dataclass
class Siblings:
    """This worker's view of its siblings: their sockets and published headroom, and its own."""

    directory: Path
    index: int
    count: int
    _published: dict[str, int] = field(default_factory=dict)
    _channels: dict[int, grpc.aio.Channel] = field(default_factory=dict)

    @classmethod
    def from_env(cls, index: int) -> Siblings | None:
        directory, count = os.environ.get(DIR_ENV), int(os.environ.get(COUNT_ENV, "1"))
        if not directory or count < 2:
            return None
        return cls(Path(directory), index, count)

    def socket_path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"

    def _headroom_path(self, index: int) -> Path:
        return _headroom_path(self.directory, index)

    @property
    def address(self) -> str:
        """Where this worker listens for relayed streams (bound in app.py)."""
        return f"unix:{self.socket_path(self.index)}"

    def publish(self, model: str, headroom: int) -> None:
        """This worker can admit `headroom` more streams of `model` (admission.py calls this as it changes)."""
        if self._published.get(model) == headroom:
            return
        self._published[model] = headroom
        path = self._headroom_path(self.index)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        # Replaced whole, so a reader never sees half a file.
        temporary.write_text(json.dumps(self._published))
        os.replace(temporary, path)

    def withdraw(self) -> None:
        """A draining worker takes no relayed stream."""
        self._headroom_path(self.index).unlink(missing_ok=True)
        self._published.clear()

    def pick(self, model: str) -> int | None:
        """The sibling with the most headroom for `model` (ties: the nearest index after this one), or None."""
        best: tuple[int, int] | None = None
        for step in range(1, self.count):
            index = (self.index + step) % self.count
            try:
                headroom = int(json.loads(self._headroom_path(index).read_text()).get(model, 0))
            except (OSError, ValueError):  # not started yet, draining, or gone
                continue
            if headroom > 0 and (best is None or headroom > best[0]):
                best = (headroom, index)
        return None if best is None else best[1]

    def _stub(self, index: int) -> speech_pb2_grpc.SpeechServiceStub:
        if index not in self._channels:
            self._channels[index] = grpc.aio.insecure_channel(
                f"unix:{self.socket_path(index)}", options=_CHANNEL_OPTIONS
            )
        return speech_pb2_grpc.SpeechServiceStub(self._channels[index])

    async def start(
        self,
        index: int,
        requests: AsyncIterator[speech_pb2.StreamingRecognizeRequest],
        metadata: Sequence[tuple[str, Any]],
        peer: str,
        timeout_s: float | None,
    ) -> Any:
        """The stream on sibling `index`, once its handler has taken it (it sends TAKEN_KEY in its headers
        at once); NotTaken when it did not: gone, draining, or not started."""
        call = self._stub(index).StreamingRecognize(
            requests, metadata=forwarded_metadata(metadata, peer), timeout=timeout_s
        )
        try:
            headers = await call.initial_metadata()
            if any(key == TAKEN_KEY for key, _ in headers or ()):
                return call
            why = f"{(await call.code()).name}: {await call.details()}" if call.done() else "no answer"
        except BaseException:
            call.cancel()
            raise
        call.cancel()
        raise NotTaken(f"worker {index} did not take the stream ({why})")

    async def carry(
        self,
        index: int,
        first: speech_pb2.StreamingRecognizeRequest,
        guard: Requests,
        *,
        metadata: Sequence[tuple[str, Any]],
        peer: str,
        timeout_s: float | None,
        idle_timeout_s: float,
        on_taken: Callable[[], object],
        drop: Callable[[], object],
    ) -> AsyncIterator[speech_pb2.StreamingRecognizeResponse]:
        """The stream whose config message was `first` and whose client's next requests `guard` reads, on
        sibling `index`: its responses. NotTaken (before any response) when the sibling did not take it;
        `on_taken` once it did; the sibling's error status as `Relayed`; this side's idle timeout after the
        sibling flushed the stream (a half-close to it); `drop`: see `responses`."""
        idle: list[PipelinedError] = []

        async def requests() -> AsyncIterator[speech_pb2.StreamingRecognizeRequest]:
            yield first
            try:
                while (request := await guard.next()) is not None:
                    yield request
            except PipelinedError as error:  # the idle timeout: the sibling flushes, then the client hears it
                idle.append(error)

        call = await self.start(index, requests(), metadata, peer, timeout_s)
        on_taken()
        async for response in responses(call, idle_timeout_s, drop):
            yield response
        if idle:
            raise idle[0]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


async def responses(
    call: Any, idle_timeout_s: float, drop: Callable[[], object]
) -> AsyncIterator[speech_pb2.StreamingRecognizeResponse]:
    """A started relay's responses; the sibling's error status is raised as `Relayed`.

    A client that reads nothing: the response handed to it waits, the relay reads no more of the
    sibling's (the small window above), the sibling's outbox fills to its bound and the sibling drops its
    side after its idle timeout (session.StreamSession._drop_unread). Its status cannot overtake the
    unread response, so this side cannot hear of it: `drop` (which ends the relaying handler) is called
    once one response has waited `idle_timeout_s` for the client, freeing this worker's slot instead of
    holding it until the client's deadline."""
    waiting_since: list[float] = []
    watch = asyncio.get_running_loop().create_task(_watch_unread(waiting_since, idle_timeout_s, drop))
    try:
        async for response in call:
            waiting_since.append(time.monotonic())
            yield response  # resumed once the response is on its way to the client
            waiting_since.clear()
    except grpc.aio.AioRpcError as error:
        raise Relayed(error.code(), error.details() or "", _retry_after_s(error)) from None
    finally:
        watch.cancel()
        call.cancel()  # the client left: the sibling's stream ends too (no-op once it ended)


async def _watch_unread(
    waiting_since: list[float], idle_timeout_s: float, drop: Callable[[], object]
) -> None:
    while True:
        await asyncio.sleep(idle_timeout_s / 4)
        if waiting_since and time.monotonic() - waiting_since[0] > idle_timeout_s:
            drop()
            return


def _headroom_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.headroom.json"


def forget(directory: str, index: int) -> None:
    """The supervisor's word that worker `index` is gone: its headroom no longer stands."""
    _headroom_path(Path(directory), index).unlink(missing_ok=True)


def _retry_after_s(error: grpc.aio.AioRpcError) -> float | None:
    for key, value in error.trailing_metadata() or ():
        if key == "retry-after-ms":
            return int(value) / 1000
    return None
