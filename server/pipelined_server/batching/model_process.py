"""A pipeline replica in a process of its own, fed its batches by the server process over a pipe.

Why: one server process runs gRPC, the proto conversions, the scheduler and the pipeline's own Python under
one GIL, so it tops out at about one core. Several server processes on one port (workers.py) only help when
clients open several connections: a client with one channel (the usual service-to-service client, and the
peers' load generator) reaches one of them. With the pipeline in its own process, that one connection's
server process does gRPC while the model computes on the other core. Measured on the peers' tiny text
classifier (2 cores shared with the load generator, one connection, default batching), `bench/unary_peers.py`
(medians of 3 repeats, quiet machine): c=32 953 req/s against 705 with the pipeline in the server process. The
pipe has a price when the server is not loaded: c=1 p50 3.44 ms against 3.09 ms, c=8 529 req/s against 567.

What crosses the pipe per batch is the batch's inputs and arguments, and its outputs (pickled: strings and
small lists for the tasks below). The server process sends and waits for the answer on its event loop (the
pipe's socket, non-blocking; `Scheduler` awaits coroutine runners), not on a worker thread: the thread added
a hop each way, and under load its answer then waited for the GIL while the loop served gRPC. Measured
interleaved on the loaded shared machine (peers' classifier, one worker): the serving process's CPU per call
at c=1 1.41 ms against 1.69 ms with the thread (1.44 against 1.84 in a second run); the same at c=32.
`bench/unary_peers.py` against `model_process: false` on the loaded machine (load average 2-4) gave c=1 p50
4.01 against 4.40 ms in one run and 7.39 against 5.80 ms in the next: too noisy to say more than that the
pipe's price at c=1 is now within the noise. Replies over INLINE_UNPICKLE_BYTES are unpickled on a thread.

The pipeline runs the same `loading.run_batch` as in process, so results are the same. Work whose callers
leave stops in the child as on a worker thread (abandon.py, between chunks and at every generated token): the
scheduler tells the replica which items a batch computes (`watching`); the child reads their deadlines itself
and the server process writes the batch's number into memory both share once every caller has left. What is
given up: the server process keeps its own copy of the pipeline for the adapters (tokenizer, labels) and for
calls that must run there (a streamed file hands segments to the event loop as they come: the scheduler runs
them on that copy, holding the replica's place), so the weights are in memory twice: `auto` turns this on
only for small models (AUTO_MAX_WEIGHT_BYTES).

Speech recognition: with two replicas as threads of one server process, 4 concurrent Recognize calls on
tiny.en int8 gave 1.59-1.66x the sequential in-process pipeline (their threads share one GIL, and Whisper's
token-by-token decoding is mostly Python); with two children, 1.95x (`bench/asr_unary.py --concurrency 1 4`,
48 calls a pass). Offline, two processes each decoding the six shared clips took 3.30 and 3.21 s against
3.29 s for one alone; two threads of one process, 3.99 s.

A child that dies (out of memory, killed) fails the batch it held with UNAVAILABLE, and the next batch
starts a new one. The child ends when the server process closes the pipe or dies (it reads EOF).

Tried and not kept: computing a lone call on an idle model in the server process's own copy, on the event
loop, with no pipe (after two lone calls in a row, each arriving 0.5 ms or more after the worker went idle).
One-worker A/B, peers' classifier, c=1: p50 3.74 against 4.23 ms (medians of 4 interleaved runs); c=8 409
against 444 req/s with the gap rule, which it needed. The run blocks the event loop, so calls that arrive
meanwhile reach the queue one by one once it ends and look like lone callers. Even with the gap rule, 8
concurrent calls from a client in the same process (one GIL, tests/e2e/test_text_parity.py) were computed
one by one under the full test suite's load: concurrent callers must batch.

Tried and not kept: the child polling its pipe for 1 ms after each answer instead of sleeping in recv() (a
sleeping process wakes 0.1-0.2 ms late on this VM). `bench/unary_peers.py`'s classifier, one worker per core,
interleaved rounds: c=1 p50 1.95 against 2.06 ms (4 rounds), but c=8 1,135 against 1,276 req/s: the polling
core is one the local load generator and the gRPC worker need. Polling only after a one-input batch did not
spare c=8 (935 against 1,085 req/s, 4 rounds): a call that finds the model idle runs alone, so c=8 makes
one-input batches too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from ..config import PROCESS_TASKS, ModelSpec
from ..errors import PipelinedError
from .abandon import Watched, install, running

log = logging.getLogger(__name__)

# `model_process: auto` keeps models above this in the server process: the weights would be loaded twice.
AUTO_MAX_WEIGHT_BYTES = 1 << 30
# Tasks whose work takes long enough that the pipe and the event loop cost a request nothing measurable: a
# model process pays off for them only where the server process would run several replicas as threads
# sharing one GIL. With one replica (the default), `auto` leaves them in the server process, since a child
# costs a second copy of the weights: the embedded whisper-tiny.en in int8 (the CPU default) took 622-682
# MiB resident (391-451 MiB PSS) per child beside its worker's 684-699 MiB, and 2 workers with a child each
# 2.5 GiB PSS in all. Live streams gained too little to pay for it: 2 minutes each
# (bench/asr_streaming.py --minutes 2), one run with a child per worker against one without (a day apart):
# final lag p95 1.25 against 1.26 s at 1 stream, 1.35 against 1.46 s at 4, 1.63 against 1.75 s at 8.
SHARED_GIL_TASKS = frozenset({"automatic-speech-recognition"})
# What the fork server imports once for every child.
_PRELOAD = ["torch", "transformers.pipelines", "pipelined_server.loading"]
# How long a child may take to import torch and transformers and load its pipeline.
START_TIMEOUT_S = 600.0
# Replies above this many bytes are unpickled on a thread: a second of feature-extraction vectors must not
# stall the event loop. Below it (a batch of labels: hundreds of bytes), the thread hop would cost more.
INLINE_UNPICKLE_BYTES = 1 << 20
RECEIVE_CHUNK = 1 << 16
# Every live ModelProcess, for the CPU time of the server's model processes (`cpu_seconds`).
_LIVE: weakref.WeakSet[ModelProcess] = weakref.WeakSet()
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ModelProcessDied(PipelinedError):
    """The process computing the batch exited; the next batch runs in a new one."""

    code = grpc.StatusCode.UNAVAILABLE


def enabled(spec: ModelSpec, weight_bytes: int, cores: int) -> bool:
    """Whether a model's replicas run in processes of their own (`model_process`; `auto`: on a CPU with
    cores to spare, for the tasks above and models small enough to hold twice; speech recognition only
    with several replicas: see SHARED_GIL_TASKS)."""
    if spec.model_process != "auto":
        return bool(spec.model_process)
    if spec.task in SHARED_GIL_TASKS and spec.replicas < 2:
        return False
    return (
        spec.task in PROCESS_TASKS
        and spec.device == "cpu"
        and not spec.devices
        and cores >= 2
        and weight_bytes <= AUTO_MAX_WEIGHT_BYTES
    )


class ModelProcess:
    """One child process holding one pipeline. `run_batch` and `run_call` are coroutines: the scheduler awaits
    them on the event loop, one at a time per replica; start, `wait_ready` and `close` block."""

    def __init__(self, spec: ModelSpec, torch_threads: int, index: int = 0) -> None:
        self.spec, self.torch_threads, self.index = spec, torch_threads, index
        self._process: Any = None
        self._conn: Any = None
        # The server's end of the pipe, non-blocking, for the event loop (a duplicate of `_conn`'s descriptor).
        self._socket: socket.socket | None = None
        # Shared with the child: the number of the batch whose callers all left (`watching`).
        self._abandoned: Any = None
        self._batches = 0
        # What `_ask` sends with the next batch: its number and its items' deadlines.
        self._watched: tuple[int, list[float | None]] | None = None
        # CPU seconds of the children before this one (a restart starts the count again).
        self._retired_cpu_s = 0.0
        self._last_cpu_s = 0.0
        _LIVE.add(self)
        self.start()

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Starts the child; `wait_ready` waits for its pipeline. Not forked from the server process, which
        runs gRPC's threads (a fork would copy them in an unknown state): from multiprocessing's fork server, a
        clean process that imported torch and transformers once, so each child starts in a fraction of a
        second and shares those pages (spawning one imported them again: about 6 s and 380 MiB each)."""
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(_PRELOAD)
        self._conn, child = context.Pipe()
        self._abandoned = context.RawArray("q", 1)
        self._process = context.Process(
            target=_serve,
            args=(child, self.spec, self.torch_threads, self._abandoned),
            name=f"pipelined-model-{self.spec.name}-{self.index}",
            daemon=True,
        )
        self._process.start()
        child.close()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        if not self._conn.poll(timeout):
            self.close()
            raise RuntimeError(f"model process of {self.spec.name!r} did not load within {timeout:g} s")
        try:
            status, detail = self._conn.recv()
        except EOFError:
            status, detail = "failed", f"it exited with code {self._process.exitcode}"
        if status != "ready":
            self.close()
            raise RuntimeError(f"model process of {self.spec.name!r} failed to load: {detail}")

    async def run_batch(self, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        result: list[Any] = await self._ask(("batch", list(inputs), kwargs))
        return result

    async def run_call(self, call: Any) -> Any:
        """A scheduler call (a picklable callable of the pipeline), run in the child."""
        return await self._ask(("call", call))

    @contextlib.contextmanager
    def watching(self, items: Sequence[Any]) -> Iterator[None]:
        """While the block runs, the batch sent is `items`' (scheduler work items): the child stops it between
        chunks and at every generated token (abandon.py) once each has passed its deadline (the child reads
        the clock: CLOCK_MONOTONIC is the same in every process) or nobody waits for any of them (a
        cancelled caller: the server process writes the batch's number where the child reads it)."""
        self._batches += 1
        number = self._batches
        flag = self._abandoned

        def check(*_: Any) -> None:
            if all(item.abandoned() for item in items):
                flag[0] = number

        for item in items:
            item.future.add_done_callback(check)
        deadlines = [item.deadline for item in items]
        timer = None
        if all(d is not None for d in deadlines):
            # Callers that left and callers whose deadline passed may abandon the batch together.
            last = max(d for d in deadlines if d is not None)
            timer = asyncio.get_running_loop().call_later(max(0.0, last - time.monotonic()), check)
        self._watched = (number, deadlines)
        try:
            yield
        finally:
            self._watched = None
            if timer is not None:
                timer.cancel()
            for item in items:
                item.future.remove_done_callback(check)

    def cpu_seconds(self) -> float:
        """CPU seconds (user and system) its child has used, and the children it replaced, read from /proc."""
        pid = self.pid
        if pid is not None:
            try:
                with open(f"/proc/{pid}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
                self._last_cpu_s = (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
            except (OSError, IndexError, ValueError):
                pass
        return self._retired_cpu_s + self._last_cpu_s

    async def _ask(self, message: tuple[Any, ...]) -> Any:
        """One round trip on the pipe, awaited on the event loop (the module docstring says why). The
        scheduler runs one batch per replica at a time, so the pipe is never shared by two questions."""
        loop = asyncio.get_running_loop()
        if self._process is None or not self._process.is_alive():
            self._close_socket()
            await asyncio.to_thread(self._restart)
        try:
            frames = _question((*message, self._watched))
        except (pickle.PicklingError, AttributeError, TypeError, BufferError) as exc:
            # The request could not be pickled (a test double's closure, an exotic argument): nothing
            # reached the child, which keeps serving.
            raise RuntimeError(f"cannot send this work to the model process: {exc}") from exc
        if self._socket is None:
            self._socket = socket.socket(fileno=os.dup(self._conn.fileno()))
            self._socket.setblocking(False)
        try:
            for frame in frames:
                await loop.sock_sendall(self._socket, frame)
            reply = await _receive(loop, self._socket)
        except (EOFError, OSError) as exc:
            self._close_socket()
            await asyncio.to_thread(self._process.join, 5)
            code = self._process.exitcode
            log.error("model process %s of %s exited (code %s)", self.pid, self.spec.name, code)
            raise ModelProcessDied(
                f"the process computing model {self.spec.name!r} exited (code {code}) during this "
                "request; a new one is starting, retry"
            ) from exc
        except BaseException:
            # Interrupted between question and answer (the server is stopping): the pipe is out of step, so
            # this child ends and the next batch starts a new one.
            self._close_socket()
            self._process.kill()
            raise
        # Large outputs (feature-extraction's vectors) are unpickled off the event loop.
        if len(reply) > INLINE_UNPICKLE_BYTES:
            ok, value = await asyncio.to_thread(pickle.loads, reply)
        else:
            ok, value = pickle.loads(reply)
        if ok:
            return value
        raise value

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _restart(self) -> None:
        started = time.monotonic()
        self.cpu_seconds()
        self._retired_cpu_s += self._last_cpu_s
        self._last_cpu_s = 0.0
        self.close()
        self.start()
        self.wait_ready()
        log.warning("model process of %s restarted in %.1f s", self.spec.name, time.monotonic() - started)

    def close(self, timeout: float = 10.0) -> None:
        """Asks the child to end (closing the pipe), then kills it if it does not within `timeout`."""
        self._close_socket()
        if self._conn is not None:
            self._conn.close()
        if self._process is not None:
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout)


async def run_batch(replica: ModelProcess, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """The scheduler's batch runner for replicas in processes (a coroutine: awaited on the event loop)."""
    return await replica.run_batch(inputs, kwargs)


async def run_call(replica: ModelProcess, call: Any) -> Any:
    """The scheduler's call runner for replicas in processes."""
    return await replica.run_call(call)


def watching(replica: ModelProcess, items: Sequence[Any]) -> contextlib.AbstractContextManager[None]:
    """The scheduler's `watch` for replicas in processes: see ModelProcess.watching."""
    return replica.watching(items)


def cpu_seconds() -> float:
    """CPU seconds used by this server process's model processes so far (live-stream admission counts them
    with the server's own: the models compute there)."""
    return sum(process.cpu_seconds() for process in list(_LIVE))


class _Remote:
    """A work item of the server process as the child sees it (abandon.Watched)."""

    def __init__(self, flag: Any, number: int, deadline: float | None) -> None:
        self.flag, self.number, self.deadline = flag, number, deadline

    def abandoned(self) -> bool:
        return self.flag[0] == self.number or (
            self.deadline is not None and time.monotonic() >= self.deadline
        )


# multiprocessing.Connection's framing, which the child's `conn.recv()` / `conn.send()` speak: a signed 4-byte
# big-endian length, or -1 and an 8-byte length for messages of 2 GiB and more.
_SHORT = struct.Struct("!i")
_LONG = struct.Struct("!Q")


def _header(size: int) -> bytes:
    return _SHORT.pack(size) if size < 0x7FFFFFFF else _SHORT.pack(-1) + _LONG.pack(size)


def _question(message: tuple[Any, ...]) -> list[Any]:
    """What goes down the pipe for one message: a frame with the sizes of its out-of-band buffers and the
    pickle, then each buffer in a frame of its own, sent from the caller's memory.

    Why out of band (pickle protocol 5): a 10-minute recording is a 38 MB float32 array; pickled in band,
    and framed as one piece, the server process held it three times while sending, and the fault probe of
    an abandoned 10-minute recognition saw the server's resident memory grow 164 MiB (its bound is 150)."""
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(message, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]  # BufferError if not contiguous: in band then (below)
    sizes = struct.pack(f"!I{len(raws)}Q", len(raws), *(raw.nbytes for raw in raws))
    frames: list[Any] = [_header(len(sizes) + len(data)), sizes, data]
    for raw in raws:
        frames += [_header(raw.nbytes), raw]
    return frames


async def _receive(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytearray:
    """One framed message from the child, read as it arrives (the event loop serves on meanwhile). Questions
    and answers alternate, so nothing follows the message on the pipe."""
    head = bytearray()
    while True:  # the length, and for a small reply (most) the whole of it
        chunk = await loop.sock_recv(sock, RECEIVE_CHUNK)
        if not chunk:
            raise EOFError("the model process closed its pipe")
        head += chunk
        if len(head) >= _SHORT.size:
            (size,) = _SHORT.unpack_from(head)
            start = _SHORT.size
            if size != -1:
                break
            if len(head) >= _SHORT.size + _LONG.size:
                (size,) = _LONG.unpack_from(head, _SHORT.size)
                start += _LONG.size
                break
    body = bytearray(size)
    got = len(head) - start
    body[:got] = head[start:]
    view = memoryview(body)
    while got < size:
        count = await loop.sock_recv_into(sock, view[got:])
        if not count:
            raise EOFError("the model process closed its pipe")
        got += count
    return body


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it pickles (its type decides the status: ValueError and TypeError from the
    pipeline are the caller's mistake), else a RuntimeError that names it."""
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _read_question(conn: Any) -> Any:
    """A message written by `_question`: its buffers are read into writable memory of their own (a pipeline
    may change its input array in place)."""
    head = conn.recv_bytes()
    (count,) = struct.unpack_from("!I", head)
    sizes = struct.unpack_from(f"!{count}Q", head, 4)
    buffers = []
    for size in sizes:
        buffer = bytearray(size)
        if size:
            conn.recv_bytes_into(buffer)
        else:
            conn.recv_bytes()
        buffers.append(buffer)
    return pickle.loads(memoryview(head)[4 + 8 * count :], buffers=buffers)


def _serve(conn: Any, spec: ModelSpec, torch_threads: int, abandoned: Any) -> None:
    """The child: loads the pipeline, then answers one message at a time until the pipe closes."""
    # Ctrl-C reaches the terminal's whole process group; it is for the server process, which drains, then
    # closes the pipe. (SIGTERM is left as it is: the supervisor and Kubernetes send it to the server process
    # only, and multiprocessing's exit handler ends its daemonic children with it.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from ..loading import load_pipeline
    from ..loading import run_batch as run_locally

    torch.set_num_threads(torch_threads)
    try:
        pipe = install(load_pipeline(spec).pipeline)
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            message = _read_question(conn)
        except (EOFError, OSError):
            return
        watched = message[-1]
        items: list[Watched] = (
            [_Remote(abandoned, watched[0], d) for d in watched[1]] if watched is not None else []
        )
        try:
            with running(items):
                if message[0] == "batch":
                    reply: tuple[bool, Any] = (True, run_locally(pipe, message[1], message[2]))
                else:
                    reply = (True, message[1](pipe))
        except Exception as exc:
            reply = (False, _portable(exc))
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as exc:  # the outputs did not pickle
            conn.send((False, RuntimeError(f"the model process cannot return this output: {exc}")))
