"""One scheduler per model: a bounded queue, dynamic batching, one worker thread per replica.

Why one thread per replica: a transformers pipeline object is not thread-safe, so each replica (a pipeline
sharing the same weights) has its own thread. On a GPU one replica with large batches is best; on a CPU,
batching barely helps (Whisper's encoder cost grows with the batch), so replicas with one torch thread each
put every core to work without the intra-op contention of many threads.

Batching must never change a result, so every item carries a `key`: items are only batched with items
of the same key. A task adapter chooses keys (e.g. by exact audio length for CTC models, whose padding
changes the output) and marks items that must run alone as not batchable.

Some work is not "one input through the pipeline": a streamed generation pushes tokens while it runs, a
seeded sampled generation must seed the RNG right before it, a generic call passes its input as is.
Callers that leave stop their work even once it runs: between chunks and at every generated token
(abandon.py); such work counts as skipped, not as pipeline items.

`submit_call(fn)` queues such a callable; it runs alone, in queue order, on a worker thread, and receives
that worker's own pipeline replica, so no pipeline object ever runs twice at once. A replica in a process of
its own (model_process.py) runs calls there; a call that must run in the server process (`here=True`: it
hands results to the event loop as it goes, worker_stream.py) runs on that replica's thread with the server's
copy of the pipeline (`local_replicas`), holding the replica's place, so the replicas' work stays one item
each at a time.

Items carry a `priority`: a worker takes the oldest item of the highest priority first, and batches it only
with items of at least that priority. Live streams use it so that the decode that ends an utterance (a
user waits on it) overtakes interim re-decodes, and never waits for lower-priority batchmates. Work below
priority 0 is spare work (a live stream's extra re-decode on an idle model): `spare_busy_s` counts its
time apart, so that what streams need is measured without what they took because it was free.

When a batch waits (`max_queue_delay_ms`): only under load. A worker that had to wait for work is idle, and
the item that wakes it runs at once, with whatever compatible items are already queued; items that arrive
while a batch runs form the next batch, which starts as soon as the worker is free (natural batching, as in
TF Serving's "batch what queued while busy"). The delay applies only when the worker goes straight from a
batch that had batchmates to the next one: several callers are then active, so waiting (counted from the
oldest item's arrival, so time spent queued behind the running batch counts) is likely to fill the batch.
Triton and TorchServe wait the delay even on an idle model; measured on the tiny text classifier at
concurrency 1 (2 CPU cores), that wait made a call take 10.96 ms p50 against 0.83 ms in process (2.55 ms with
no delay).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from ..config import BatchingConfig
from ..errors import Cancelled, DeadlineExpired, InvalidInput, ModelNotReady, QueueFull
from ..metrics import Metrics
from .abandon import Abandoned, install, running

log = logging.getLogger(__name__)
Result = TypeVar("Result")

# Runs a list of inputs that share one key through a pipeline replica; returns one output per input.
BatchRunner = (
    Callable[[Any, Sequence[Any], dict[str, Any]], list[Any]]
    | Callable[[Any, Sequence[Any], dict[str, Any]], Awaitable[list[Any]]]
)
# Work that is not one input through the pipeline; receives the worker's pipeline replica.
ReplicaCall = Callable[[Any], Any]
# Runs a call with a replica: by default the call receives the replica's pipeline; a replica in a process of
# its own (model_process.py) runs it there.
CallRunner = Callable[[Any, ReplicaCall], Any]  # or a coroutine function:
# Both runners may instead be coroutine functions: they are then awaited on the event loop, with no worker
# thread. That is for replicas whose work happens elsewhere (model_process.py: a round trip on a pipe), where a
# thread would only add a hop each way, and, with the event loop busy, a wait for the GIL before the answer
# could be handed back.


def call_locally(pipeline: Any, call: ReplicaCall) -> Any:
    return call(pipeline)


@dataclass(eq=False)
class WorkItem:
    """One input waiting for the pipeline."""

    payload: Any
    # Pipeline call arguments; identical for all items of one key.
    kwargs: dict[str, Any]
    key: Hashable
    batchable: bool
    future: asyncio.Future[Any]
    # Absolute time.monotonic() after which computing is pointless; None for no deadline.
    deadline: float | None
    # The same clock reading as the deadline's (`_enqueue`): the delay and the queue time count from it.
    enqueued_at: float
    # Runs instead of the batch runner (see submit_call); such items are never batched.
    call: ReplicaCall | None = None
    # Higher runs first (see the module docstring); 0 for ordinary requests.
    priority: int = 0
    # A call that runs in the server process even when the replicas run elsewhere (see submit_call).
    here: bool = False

    def abandoned(self) -> bool:
        """Nobody waits for the result: the caller cancelled, or its deadline passed. Read from the worker
        thread too (batching/abandon.py): a future's done() is a plain attribute read."""
        return self.future.done() or (self.deadline is not None and time.monotonic() >= self.deadline)


class Scheduler:
    """Queues work items and runs them in batches, one worker thread per pipeline replica."""

    def __init__(
        self,
        model: str,
        replicas: Sequence[Any],
        run_batch: BatchRunner,
        config: BatchingConfig,
        metrics: Metrics,
        run_call: CallRunner = call_locally,
        local_replicas: Sequence[Any] = (),
        watch: Callable[[Any, Sequence[WorkItem]], contextlib.AbstractContextManager[Any]] | None = None,
    ) -> None:
        self.model = model
        # Each replica stops between chunks and at every generated token once its caller left (abandon.py).
        self._replicas = [install(replica) for replica in replicas]
        self._run_batch = run_batch
        self._run_call = run_call
        self._awaited = inspect.iscoroutinefunction(run_batch)
        if self._awaited != inspect.iscoroutinefunction(run_call):
            raise TypeError("run_batch and run_call must both be coroutine functions, or neither")
        # With coroutine runners: the server process's own pipelines, one per replica, for `here` calls.
        self._local = [install(replica) for replica in local_replicas]
        if self._local and len(self._local) != len(self._replicas):
            raise ValueError("local_replicas must have one pipeline per replica")
        # Told which items a coroutine runner's batch computes while it runs, so that work elsewhere can
        # stop once they are abandoned (model_process.watching).
        self._watch = watch
        self._config = config
        self._queue: deque[WorkItem] = deque()
        self._wakeup = asyncio.Event()
        self._executors = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pipeline-{model}-{i}")
            for i in range(len(self._replicas) if self._local or not self._awaited else 0)
        ]
        self._workers: list[asyncio.Task[None]] = []
        self._closed = False
        # Labelled metric children, looked up once instead of per item.
        self._queue_depth = metrics.queue_depth.labels(model)
        self._queue_time = metrics.queue_time.labels(model)
        self._batch_size = metrics.batch_size.labels(model)
        self._skipped_cancelled = metrics.skipped.labels(model, "cancelled")
        self._skipped_deadline = metrics.skipped.labels(model, "deadline")
        self._pipeline_calls = metrics.pipeline_calls.labels(model)
        self._pipeline_items = metrics.pipeline_items.labels(model)
        # Seconds the replicas spent computing, all together: live-stream admission reads its rate...
        self.busy_s = 0.0
        # ...of which this much on work of a priority below 0 (a live stream's spare re-decode): work done
        # only because a replica was free, which a busier model simply does not do.
        self.spare_busy_s = 0.0
        self._running = 0

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def replica_count(self) -> int:
        return len(self._replicas)

    @property
    def idle(self) -> bool:
        """Nothing is queued and a replica is free: work submitted now starts at once."""
        return not self._queue and self._running < len(self._replicas)

    def start(self) -> None:
        if not self._workers:
            loop = asyncio.get_running_loop()
            self._workers = [
                loop.create_task(self._run(i), name=f"scheduler-{self.model}-{i}")
                for i in range(len(self._replicas))
            ]

    async def submit(
        self,
        payload: Any,
        kwargs: dict[str, Any],
        *,
        key: Hashable = None,
        batchable: bool = True,
        timeout: float | None = None,
        priority: int = 0,
    ) -> Any:
        """Queues one input and waits for its output.

        `timeout` is the caller's remaining deadline in seconds. Cancelling the awaiting task (the
        gRPC call was cancelled) removes the item before it is computed.
        """
        return await self._enqueue(payload, kwargs, key, batchable, timeout, None, priority)

    def ensure_room(self, count: int) -> None:
        """Refuses a request of `count` items up front when they cannot all be queued, so a request is
        queued whole or not at all (half a request computed for nobody helps no one)."""
        if len(self._queue) + count > self._config.max_queue_size:
            raise QueueFull(
                f"model {self.model!r} has {len(self._queue)} requests queued and this request adds {count} "
                f"(max_queue_size={self._config.max_queue_size}); retry later or send fewer inputs"
            )

    async def submit_call(
        self, call: ReplicaCall, *, timeout: float | None = None, here: bool = False
    ) -> Any:
        """Queues `call(pipeline)`, run alone on a worker thread with its replica; returns what it returns.
        `here`: run in this process with its own copy of the pipeline, even where the replicas run in
        processes of their own (the call need not pickle, and may hand results to the event loop)."""
        if here and self._awaited and not self._local:
            raise RuntimeError(f"model {self.model!r} has no pipeline in the server process for this call")
        return await self._enqueue(None, {}, None, False, timeout, call, here=here)

    async def _enqueue(
        self,
        payload: Any,
        kwargs: dict[str, Any],
        key: Hashable,
        batchable: bool,
        timeout: float | None,
        call: ReplicaCall | None,
        priority: int = 0,
        here: bool = False,
    ) -> Any:
        if self._closed:
            raise ModelNotReady(f"model {self.model!r} is shutting down")
        if len(self._queue) >= self._config.max_queue_size:
            raise QueueFull(
                f"model {self.model!r} has {len(self._queue)} requests queued "
                f"(max_queue_size={self._config.max_queue_size}); retry later"
            )
        now = time.monotonic()
        item = WorkItem(
            payload=payload,
            kwargs=kwargs,
            key=(key, _freeze(kwargs)),
            batchable=batchable,
            future=asyncio.get_running_loop().create_future(),
            deadline=None if timeout is None else now + timeout,
            enqueued_at=now,
            call=call,
            priority=priority,
            here=here,
        )
        self._queue.append(item)
        self._queue_depth.set(len(self._queue))
        self._wakeup.set()
        try:
            return await item.future
        except asyncio.CancelledError:
            item.future.cancel()
            # A caller that left frees its queue slot at once, not when a worker reaches the item.
            if item in self._queue:
                self._queue.remove(item)
                self._skipped_cancelled.inc()
                self._queue_depth.set(len(self._queue))
            raise

    async def close(self) -> None:
        """Fails what is still queued, lets the batches in flight answer their callers, stops the threads."""
        self._closed = True
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(ModelNotReady(f"model {self.model!r} is shutting down"))
        self._queue_depth.set(0)
        self._wakeup.set()
        await asyncio.gather(*self._workers, return_exceptions=True)
        # The workers have returned, so the threads are idle: release them without blocking the event loop.
        for executor in self._executors:
            executor.shutdown(wait=False)

    async def _run(self, replica: int) -> None:
        pipeline = self._replicas[replica]
        last_shared = False  # whether this worker's previous batch had batchmates (see the module docstring)
        while not self._closed:
            batch = await self._next_batch(under_load=last_shared)
            self._queue_depth.set(len(self._queue))
            if batch:
                last_shared = len(batch) > 1
                await self._run_batch_on(replica, pipeline, batch)
            else:
                last_shared = False

    async def _run_batch_on(self, replica: int, pipeline: Any, batch: list[WorkItem]) -> None:
        started = time.monotonic()
        self._running += 1
        for item in batch:
            self._queue_time.observe(started - item.enqueued_at)
        self._batch_size.observe(len(batch))
        loop = asyncio.get_running_loop()
        try:
            if self._awaited and not batch[0].here:
                outcomes = await self._compute_awaited(pipeline, batch)
            else:
                pipe = self._local[replica] if self._awaited else pipeline
                outcomes = await loop.run_in_executor(self._executors[replica], self._compute, pipe, batch)
        except Exception as exc:  # the worker must survive anything, or its replica stops serving
            log.exception("scheduler %s: batch failed outside the pipeline", self.model)
            outcomes = [(False, exc)] * len(batch)
        finally:
            self._running -= 1
        elapsed = time.monotonic() - started
        self.busy_s += elapsed
        if batch[0].priority < 0:  # the batch's first item has its highest priority
            self.spare_busy_s += elapsed
        for item, (ok, value) in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue  # the caller left while we computed
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    async def _next_batch(self, under_load: bool) -> list[WorkItem]:
        """Takes the oldest item of the highest priority and the compatible items queued with it. Waits up
        to its delay for more only when `under_load` (the previous batch had batchmates) and the worker did not
        have to wait for work; an idle worker runs what it finds at once."""
        if not self._queue:
            under_load = False  # the worker is idle: the next item runs without waiting for batchmates
            while not self._queue:
                if self._closed:
                    return []
                self._wakeup.clear()
                await self._wakeup.wait()
        first = max(self._queue, key=_priority)  # max() keeps the oldest of equals
        self._queue.remove(first)
        batch = [first]
        limit = self._config.max_batch_size
        if first.batchable and limit > 1:
            self._take_compatible(first, batch)
            if under_load and len(batch) < limit and self._config.max_queue_delay_ms > 0:
                close_at = first.enqueued_at + self._config.max_queue_delay_ms / 1000.0
                while True:
                    remaining = close_at - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), remaining)
                    # A caller that left while we gathered frees its place in the batch.
                    batch = self._drop_cancelled(batch)
                    self._take_compatible(first, batch)
                    if len(batch) >= limit:
                        break
        return self._drop_dead(batch)

    def _drop_cancelled(self, batch: list[WorkItem]) -> list[WorkItem]:
        alive = [item for item in batch if not item.future.done()]
        if len(alive) != len(batch):
            self._skipped_cancelled.inc(len(batch) - len(alive))
        return alive

    def _take_compatible(self, first: WorkItem, batch: list[WorkItem]) -> None:
        for item in list(self._queue):
            if len(batch) >= self._config.max_batch_size:
                return
            if item.batchable and item.key == first.key and item.priority >= first.priority:
                self._queue.remove(item)
                batch.append(item)

    def _drop_dead(self, batch: list[WorkItem]) -> list[WorkItem]:
        """Removes items whose caller cancelled or whose deadline passed: they are never computed."""
        now = time.monotonic()
        alive = []
        for item in batch:
            if item.future.done():
                self._skipped_cancelled.inc()
            elif item.deadline is not None and item.deadline <= now:
                self._skipped_deadline.inc()
                item.future.set_exception(DeadlineExpired("deadline passed while the request was queued"))
            else:
                alive.append(item)
        return alive

    def _compute(self, pipeline: Any, batch: list[WorkItem]) -> list[tuple[bool, Any]]:
        """Runs on a worker thread: `_attempt` with the runners called directly, so it never suspends."""
        return _run_to_end(self._attempt(pipeline, batch, self._call_here))

    async def _compute_awaited(self, pipeline: Any, batch: list[WorkItem]) -> list[tuple[bool, Any]]:
        """On the event loop, for coroutine runners. Their work runs elsewhere: `watch` tells the replica
        which items it computes, so that it can stop once nobody waits (model_process.watching)."""
        return await self._attempt(pipeline, batch, self._call_watched)

    async def _call_watched(self, pipeline: Any, batch: list[WorkItem]) -> list[Any]:
        if self._watch is None:
            return await self._call(pipeline, batch)
        with self._watch(pipeline, batch):
            return await self._call(pipeline, batch)

    async def _attempt(
        self,
        pipeline: Any,
        batch: list[WorkItem],
        call: Callable[[Any, list[WorkItem]], Awaitable[list[Any]]],
    ) -> list[tuple[bool, Any]]:
        """A failing batch is retried item by item so one bad input fails alone. Work abandoned while it ran
        (abandon.py) is counted as skipped, not as pipeline items."""
        try:
            return [(True, out) for out in await call(pipeline, batch)]
        except Abandoned:
            return [self._skip_abandoned(item) for item in batch]
        except Exception as exc:
            if len(batch) == 1:
                return [(False, exc)]
        outcomes: list[tuple[bool, Any]] = []
        for item in batch:
            if item.abandoned():
                outcomes.append(self._skip_abandoned(item))
                continue
            try:
                outcomes.append((True, (await call(pipeline, [item]))[0]))
            except Abandoned:
                outcomes.append(self._skip_abandoned(item))
            except Exception as exc:
                outcomes.append((False, exc))
        return outcomes

    async def _call_here(self, pipeline: Any, batch: list[WorkItem]) -> list[Any]:
        """`_call` on this worker thread, its items marked as the thread's work (abandon.py)."""
        with running(batch):
            return await self._call(pipeline, batch)

    def _skip_abandoned(self, item: WorkItem) -> tuple[bool, Any]:
        if item.deadline is not None and time.monotonic() >= item.deadline:
            self._skipped_deadline.inc()
            return (
                False,
                DeadlineExpired("deadline passed while the request was computed; the work stopped"),
            )
        self._skipped_cancelled.inc()
        return (False, Cancelled("cancelled while computing; the work stopped"))

    async def _call(self, pipeline: Any, batch: list[WorkItem]) -> list[Any]:
        """The batch through its runner; suspends only to await a coroutine runner."""
        try:
            if batch[0].here:
                outputs = [call_locally(pipeline, cast(ReplicaCall, batch[0].call))]
            elif batch[0].call is not None:
                output = self._run_call(pipeline, batch[0].call)
                outputs = [await output if self._awaited else output]
            else:
                result = self._run_batch(pipeline, [item.payload for item in batch], batch[0].kwargs)
                outputs = (
                    await cast(Awaitable[list[Any]], result) if self._awaited else cast(list[Any], result)
                )
        except Abandoned:
            raise
        except Exception as exc:
            failure = self._failed(batch, exc)
            if failure is exc:
                raise
            raise failure from exc
        return self._computed(batch, outputs)

    def _failed(self, batch: list[WorkItem], exc: Exception) -> Exception:
        """What a batch whose runner raised `exc` fails with."""
        self._count_computed(batch)
        if isinstance(exc, ValueError | TypeError):
            # transformers validates arguments and inputs by raising these: the caller's mistake. The same
            # exception types from our own code elsewhere stay INTERNAL (services/calls.py).
            return InvalidInput(f"the pipeline rejected the request: {exc}")
        return exc

    def _computed(self, batch: list[WorkItem], outputs: list[Any]) -> list[Any]:
        self._count_computed(batch)
        if len(outputs) != len(batch):
            raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {len(batch)} inputs")
        return outputs

    def _count_computed(self, batch: list[WorkItem]) -> None:
        self._pipeline_calls.inc()
        self._pipeline_items.inc(len(batch))


def _run_to_end(coroutine: Coroutine[Any, Any, Result]) -> Result:
    """What a coroutine that never suspends returns, run on this thread (no event loop here)."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        return cast(Result, done.value)
    coroutine.close()
    raise RuntimeError("a scheduler coroutine waited on a worker thread")


async def gather_or_cancel(awaitables: Iterable[Awaitable[Any]]) -> list[Any]:
    """Results in order; the first failure cancels the rest, so their queue entries are freed at once."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


def _priority(item: WorkItem) -> int:
    return item.priority


def _freeze(value: Any) -> Hashable:
    """A hashable form of nested call arguments: equal arguments give equal batch keys, and different
    ones never do (types are part of the key; arrays by their bytes, not their abbreviated repr)."""
    if isinstance(value, dict):
        return ("dict", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return (type(value).__name__, tuple(_freeze(v) for v in value))
    if hasattr(value, "tobytes") and hasattr(value, "shape"):
        return ("array", str(getattr(value, "dtype", "")), tuple(value.shape), value.tobytes())
    try:
        hash(value)
    except TypeError:
        return ("object", id(value))  # unknown unhashable: never batched with anything else
    return (type(value).__name__, value)
