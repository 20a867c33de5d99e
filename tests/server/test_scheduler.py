"""Scheduler semantics with a recording runner: batching, keys, queue limits, deadlines, cancellation, metrics.

No test sleeps for a fixed time: a test holds the worker inside the pipeline with the recorder's gate and waits
for what it needs to have happened (a batch reached the pipeline, the queue reached a depth). Every wait, and
every test body (`guarded`), is bounded by GUARD_S, so a scheduler that never answers fails the test within it
(tests/MUTATION.md: a mutant that makes a test wait forever is killed in seconds, not at a timeout).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import functools
import importlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from pipelined_server.batching import Scheduler
from pipelined_server.batching.scheduler import gather_or_cancel
from pipelined_server.config import BatchingConfig
from pipelined_server.errors import DeadlineExpired, InvalidInput, ModelNotReady, QueueFull
from pipelined_server.metrics import Metrics

# The bound of every wait: far above what any of these tests needs on a loaded 2-core machine (well under a
# second), so it is never the reason a correct scheduler fails; no elapsed time is compared with a threshold.
GUARD_S = 10.0
M = {"model": "m"}


def guarded(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """The test body, failed (TimeoutError) if it has not finished within GUARD_S."""

    @functools.wraps(test)
    async def bounded(*args: Any, **kwargs: Any) -> None:
        await asyncio.wait_for(test(*args, **kwargs), GUARD_S)

    return bounded


class Recorder:
    """Doubles its inputs and records each batch as it reaches the pipeline. `gate` (set by default) holds
    the worker inside the pipeline while it is clear, so a test can build up a queue behind a running batch."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.kwargs: list[dict[str, Any]] = []
        self.replicas: list[Any] = []
        self.gate = threading.Event()
        self.gate.set()
        self._arrived = threading.Condition()

    def __call__(self, replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        with self._arrived:
            self.batches.append(list(inputs))
            self.kwargs.append(kwargs)
            self.replicas.append(replica)
            self._arrived.notify_all()
        self.gate.wait(GUARD_S)
        if any(isinstance(x, str) and x == "bad" for x in inputs):
            raise ValueError("bad input")
        return [x * 2 for x in inputs]

    async def holding(self, count: int = 1) -> None:
        """Waits until `count` batches have reached the pipeline: with the gate clear, the worker holds the
        last of them."""

        def wait() -> bool:
            with self._arrived:
                return self._arrived.wait_for(lambda: len(self.batches) >= count, GUARD_S)

        assert await asyncio.to_thread(wait), f"{count} batch(es) never reached the pipeline: {self.batches}"


async def until(condition: Callable[[], bool], what: str) -> None:
    """Lets the event loop run (the scheduler's workers are tasks on it) until `condition()` holds."""
    give_up = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < give_up, f"never happened: {what}"
        await asyncio.sleep(0.001)


def make(recorder: Recorder, metrics: Metrics | None = None, **batching: Any) -> Scheduler:
    config = BatchingConfig(**{"max_batch_size": 4, "max_queue_delay_ms": 50, **batching})
    scheduler = Scheduler("m", ["replica"], recorder, config, metrics or Metrics())
    scheduler.start()
    return scheduler


def skipped(metrics: Metrics, reason: str) -> float:
    return metrics.value("pipelined_requests_skipped_total", {**M, "reason": reason})


class Clock:
    """Stands in for the `time` module of batching/scheduler.py (the `clock` fixture): its `monotonic()` reads
    `now`, which only the test moves. asyncio's own timers keep the real clock, so a worker gathering batchmates
    still wakes on an event; what the scheduler's clock decides (whether a delay or a deadline has ended) is
    then exact: no reading of a real clock races the test, however loaded the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(importlib.import_module("pipelined_server.batching.scheduler"), "time", fake)
    return fake


@guarded
async def test_concurrent_requests_share_batches_up_to_the_limit() -> None:
    recorder = Recorder()
    scheduler = make(recorder)
    results = await asyncio.gather(*(scheduler.submit(i, {}) for i in range(6)))
    assert results == [i * 2 for i in range(6)]
    assert [len(b) for b in recorder.batches] == [4, 2]
    await scheduler.close()


@guarded
async def test_keys_and_arguments_separate_batches_and_unbatchable_items_run_alone() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(0, {}))
    await recorder.holding(1)
    queued = [
        asyncio.ensure_future(scheduler.submit(5, {}, key="a", batchable=False)),
        asyncio.ensure_future(scheduler.submit(1, {}, key="a")),
        asyncio.ensure_future(scheduler.submit(2, {}, key="b")),
        asyncio.ensure_future(scheduler.submit(3, {"x": 1}, key="a")),
        asyncio.ensure_future(scheduler.submit(4, {}, key="a")),
    ]
    await until(lambda: scheduler.depth == 5, "five items queued")
    recorder.gate.set()
    assert await asyncio.gather(busy, *queued) == [0, 10, 2, 4, 6, 8]
    # In queue order; the unbatchable item takes no batchmates of its key either.
    assert recorder.batches == [[0], [5], [1, 4], [2], [3]]
    # Every batch ran on the worker's replica.
    assert recorder.replicas == ["replica"] * 5
    await scheduler.close()


@guarded
async def test_only_equal_call_arguments_batch_together() -> None:
    """Arguments are compared by value and type, nested and arrays included: a batch shares one set of
    arguments, so two requests batch only if passing either's arguments to both changes nothing."""
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=16, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(0, {}))
    await recorder.holding(1)
    a = np.arange(4, dtype=np.float32)
    arguments = [
        {"opts": {"top": [1, 2]}, "n": 1},
        {"n": 1, "opts": {"top": [1, 2]}},  # the same, in another order: batches with the first
        {"opts": {"top": (1, 2)}, "n": 1},  # a tuple is not a list
        {"opts": {"top": [1, 3]}, "n": 1},  # another element
        {"opts": {"top": [1, 2]}, "n": 1.0},  # equal, but another type
        {"opts": {"top": [1, 2]}, "n": 2},  # another value
        {"w": a},
        {"w": a.copy()},  # equal array: batches with the one before
        {"w": a.view(np.int32)},  # same bytes and shape, other dtype
        {"w": a.reshape(2, 2)},  # same bytes, other shape
        {"w": a + 1},  # other values
        {"s": {1, 2}},  # unhashable and unknown: never batched, even with an equal one
        {"s": {1, 2}},
        {"top_k": 1},
        {"top_p": 1},  # another name, the same value
        {"b": array.array("b", [1])},  # bytes but no shape: not an array
        {"b": memoryview(b"ab")},  # bytes and a shape but no dtype
    ]
    calls = [asyncio.ensure_future(scheduler.submit(i + 1, kw)) for i, kw in enumerate(arguments)]
    await until(lambda: scheduler.depth == len(arguments), "every call queued")
    recorder.gate.set()
    assert await asyncio.gather(busy, *calls) == [2 * i for i in range(len(arguments) + 1)]
    assert sorted(recorder.batches[1:]) == [[1, 2], [3], [4], [5], [6], [7, 8], *([i] for i in range(9, 18))]
    # Each batch ran with its own arguments, as given.
    assert recorder.kwargs[1] == arguments[0] and recorder.kwargs[recorder.batches.index([9])] is arguments[8]
    await scheduler.close()


@guarded
async def test_full_queue_answers_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=1, max_queue_size=2)
    first = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3)]
    await until(lambda: scheduler.depth == 2, "two items queued")
    assert metrics.value("pipelined_queue_depth", M) == 2
    with pytest.raises(
        QueueFull, match=r"^model 'm' has 2 requests queued \(max_queue_size=2\); retry later$"
    ):
        await scheduler.submit(4, {})
    with pytest.raises(QueueFull, match="max_queue_size=2"):
        await scheduler.submit_call(lambda _pipe: None)
    recorder.gate.set()
    assert await first == 2 and [await q for q in queued] == [4, 6]
    assert recorder.batches == [[1], [2], [3]]
    await scheduler.close()


@guarded
async def test_ensure_room_refuses_a_request_that_does_not_fit_whole() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=1, max_queue_size=3)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    scheduler.ensure_room(3)  # an empty queue takes 3
    queued = asyncio.ensure_future(scheduler.submit(2, {}))
    await until(lambda: scheduler.depth == 1, "one item queued")
    scheduler.ensure_room(2)  # exactly fills it
    message = r"^model 'm' has 1 requests queued and this request adds 3 \(max_queue_size=3\); retry later"
    with pytest.raises(QueueFull, match=message):
        scheduler.ensure_room(3)
    recorder.gate.set()
    assert [await busy, await queued] == [2, 4]
    await scheduler.close()


@guarded
async def test_expired_and_cancelled_items_are_never_computed(clock: Clock) -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=1)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    expiring = asyncio.ensure_future(scheduler.submit(2, {}, timeout=5.0))
    cancelled = asyncio.ensure_future(scheduler.submit(3, {}))
    lasting = asyncio.ensure_future(scheduler.submit(6, {}, timeout=5.001))
    await until(lambda: scheduler.depth == 3, "three items queued")
    cancelled.cancel()
    clock.now += 5.0  # exactly item 2's deadline: it has expired; item 6 has a millisecond left
    recorder.gate.set()
    assert await busy == 2
    with pytest.raises(DeadlineExpired, match="^deadline passed while the request was queued$"):
        await expiring
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert await lasting == 12  # a deadline not reached yet: computed
    await scheduler.submit(4, {})
    assert recorder.batches == [[1], [6], [4]]
    assert skipped(metrics, "deadline") == 1
    assert skipped(metrics, "cancelled") == 1
    await scheduler.close()


@guarded
async def test_a_failing_input_fails_alone() -> None:
    recorder = Recorder()
    scheduler = make(recorder)
    ok1, bad, ok3 = (asyncio.ensure_future(scheduler.submit(x, {})) for x in (1, "bad", 3))
    with pytest.raises(InvalidInput, match="^the pipeline rejected the request: bad input$"):
        await bad
    assert await ok1 == 2 and await ok3 == 6
    # The batch, then each of its items alone.
    assert recorder.batches == [[1, "bad", 3], [1], ["bad"], [3]]
    assert recorder.replicas == ["replica"] * 4
    await scheduler.close()


@guarded
async def test_errors_other_than_the_callers_mistake_keep_their_type() -> None:
    """ValueError/TypeError from the pipeline are the caller's (InvalidInput); anything else is not, and
    still counts as a pipeline call."""
    metrics = Metrics()

    def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        if inputs == [0]:
            raise TypeError("wrong type")
        if inputs == [1]:
            raise KeyError("lost")
        return list(inputs)[1:]  # one output short

    scheduler = Scheduler("m", [None], run, BatchingConfig(max_batch_size=1), metrics)
    scheduler.start()
    with pytest.raises(InvalidInput, match="^the pipeline rejected the request: wrong type$"):
        await scheduler.submit(0, {})
    with pytest.raises(KeyError, match="lost"):
        await scheduler.submit(1, {})
    with pytest.raises(RuntimeError, match="^pipeline returned 0 outputs for 1 inputs$"):
        await scheduler.submit(2, {})
    assert metrics.value("pipelined_pipeline_calls_total", M) == 3
    assert metrics.value("pipelined_pipeline_items_total", M) == 3
    await scheduler.close()


@guarded
async def test_coroutine_runners_are_awaited_on_the_event_loop_under_the_same_failure_rules() -> None:
    """A replica in a process of its own (model_process.py) has coroutine runners: no worker thread, the same
    batches, retries and error mapping as a pipeline on a thread."""
    loop_thread = threading.current_thread().name
    batches: list[list[Any]] = []
    threads: set[str] = set()
    gate = asyncio.Event()

    async def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        threads.add(threading.current_thread().name)
        batches.append(list(inputs))
        await gate.wait()
        if "bad" in inputs:
            raise ValueError("bad input")
        if "lost" in inputs:
            raise KeyError("lost")
        return [x * 2 for x in inputs]

    async def call(replica: Any, work: Callable[[Any], Any]) -> Any:
        threads.add(threading.current_thread().name)
        return work(replica)

    metrics = Metrics()
    scheduler = Scheduler("m", ["replica"], run, BatchingConfig(max_batch_size=4), metrics, run_call=call)
    scheduler.start()
    first = asyncio.ensure_future(scheduler.submit(0, {}))
    await until(lambda: batches == [[0]], "the first batch running")
    rest = [asyncio.ensure_future(scheduler.submit(x, {})) for x in (1, "bad", 3)]
    await until(lambda: scheduler.depth == 3, "three items queued behind it")
    gate.set()
    with pytest.raises(InvalidInput, match="^the pipeline rejected the request: bad input$"):
        await rest[1]
    assert [await first, await rest[0], await rest[2]] == [0, 2, 6]
    assert batches == [[0], [1, "bad", 3], [1], ["bad"], [3]]
    with pytest.raises(KeyError, match="lost"):
        await scheduler.submit("lost", {})
    assert await scheduler.submit_call(lambda replica: f"called with {replica}") == "called with replica"
    assert threads == {loop_thread}
    assert metrics.value("pipelined_pipeline_items_total", M) == 1 + 3 + 3 + 1 + 1
    await scheduler.close()


@guarded
async def test_here_calls_run_on_the_server_copy_holding_the_replica_and_the_rest_go_to_the_runner() -> None:
    """Replicas in processes of their own (coroutine runners): a `here` call (a streamed file's segments, which
    must reach this event loop) runs on that replica's thread with the server's copy, and the replica takes
    nothing else meanwhile; other calls and batches go to the runner, told which items they compute."""
    loop_thread = threading.current_thread().name
    seen: list[tuple[str, Any]] = []
    watched: list[list[Any]] = []
    gate = threading.Event()

    async def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        seen.append((threading.current_thread().name, replica))
        return list(inputs)

    async def call(replica: Any, work: Callable[[Any], Any]) -> Any:
        seen.append((threading.current_thread().name, replica))
        return work(replica)

    @contextlib.contextmanager
    def watch(replica: Any, items: Sequence[Any]) -> Iterator[None]:
        watched.append([item.payload for item in items])
        yield

    def held_here(pipeline: Any) -> Any:
        gate.wait(30)
        return (threading.current_thread().name, pipeline)

    scheduler = Scheduler(
        "m", ["child"], run, BatchingConfig(), Metrics(), run_call=call, local_replicas=["copy"], watch=watch
    )
    scheduler.start()
    here = asyncio.ensure_future(scheduler.submit_call(held_here, here=True))
    await until(lambda: not scheduler.idle and scheduler.depth == 0, "the here call running")
    after = asyncio.ensure_future(scheduler.submit(7, {}))
    await asyncio.sleep(0.1)
    assert not seen and scheduler.depth == 1, "the replica takes nothing else while a here call holds it"
    gate.set()
    thread, pipeline = await here
    assert thread != loop_thread and pipeline == "copy"
    assert await after == 7
    assert await scheduler.submit_call(lambda replica: replica) == "child"
    assert seen == [(loop_thread, "child"), (loop_thread, "child")]
    assert watched == [[7], [None]]
    await scheduler.close()
    plain = Scheduler("m", ["child"], run, BatchingConfig(), Metrics(), run_call=call)
    with pytest.raises(RuntimeError, match="no pipeline in the server process"):
        await plain.submit_call(held_here, here=True)


def test_runners_are_both_coroutines_or_neither() -> None:
    async def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        return list(inputs)

    with pytest.raises(TypeError, match="both be coroutine functions, or neither"):
        Scheduler("m", ["replica"], run, BatchingConfig(), Metrics())


@guarded
async def test_replicas_compute_batches_in_parallel() -> None:
    """Two replicas: two batches run at the same time (each runner waits for the other at a barrier)."""
    barrier = threading.Barrier(2, timeout=GUARD_S)
    seen: list[tuple[str, str]] = []

    def run(replica: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        barrier.wait()
        seen.append((replica, threading.current_thread().name))
        return list(inputs)

    config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0)
    scheduler = Scheduler("m", ["a", "b"], run, config, Metrics())
    assert scheduler.replica_count == 2
    scheduler.start()
    # One worker task per replica, named so in a dump of the event loop's tasks.
    assert {"scheduler-m-0", "scheduler-m-1"} <= {task.get_name() for task in asyncio.all_tasks()}
    assert await asyncio.gather(scheduler.submit(1, {}), scheduler.submit(2, {})) == [1, 2]
    # Each replica on its own thread, named after the model and the replica.
    assert sorted(seen) == [("a", "pipeline-m-0_0"), ("b", "pipeline-m-1_0")]
    await scheduler.close()


@guarded
async def test_calls_run_alone_on_the_worker_thread_in_queue_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = Scheduler("m", ["replica"], recorder, BatchingConfig(max_queue_delay_ms=0), Metrics())
    scheduler.start()
    seen: list[tuple[Any, str]] = []

    def call(pipe: Any, value: Any) -> Any:
        seen.append((pipe, threading.current_thread().name))
        recorder.batches.append([f"call-{value}"])
        if value == "bad":
            raise ValueError("bad call")
        return value

    first = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)  # the worker holds item 1; the rest queue up behind it
    rest = [
        asyncio.ensure_future(scheduler.submit_call(lambda pipe: call(pipe, "a"))),
        asyncio.ensure_future(scheduler.submit(2, {})),
        asyncio.ensure_future(scheduler.submit_call(lambda pipe: call(pipe, "bad"))),
        asyncio.ensure_future(scheduler.submit(3, {})),
    ]
    await until(lambda: scheduler.depth == 4, "four items queued")
    recorder.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:3] == [2, "a", 4] and results[4] == 6
    assert isinstance(results[3], InvalidInput) and "bad call" in str(results[3])
    # Calls never join a batch and keep their place in the queue; the plain items queued around them still
    # batch together.
    assert recorder.batches == [[1], ["call-a"], [2, 3], ["call-bad"]]
    # Each call received the worker's replica, on that worker's thread.
    assert seen == [("replica", "pipeline-m-0_0")] * 2
    await scheduler.close()


@guarded
async def test_a_cancelled_caller_frees_its_queue_slot_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=1, max_queue_size=2)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    waiting = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3)]
    await until(lambda: scheduler.depth == 2, "two items queued")
    waiting[0].cancel()
    await until(lambda: scheduler.depth == 1, "the cancelled item left the queue")
    assert metrics.value("pipelined_queue_depth", M) == 1
    assert skipped(metrics, "cancelled") == 1
    waiting[1].cancel()
    await until(lambda: scheduler.depth == 0, "the cancelled items left the queue")
    assert metrics.value("pipelined_queue_depth", M) == 0
    with pytest.raises(QueueFull, match="adds 3"):
        scheduler.ensure_room(3)
    scheduler.ensure_room(2)
    recorder.gate.set()
    assert await busy == 2
    assert recorder.batches == [[1]]
    assert skipped(metrics, "cancelled") == 2  # once each: not again when a worker would have reached them
    await scheduler.close()


@guarded
async def test_close_answers_the_batch_in_flight_and_refuses_the_rest() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=1)
    running = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3)]
    await until(lambda: scheduler.depth == 2, "two items queued")
    closing = asyncio.ensure_future(scheduler.close())
    await until(lambda: all(q.done() for q in queued), "close failed the queued items")
    assert metrics.value("pipelined_queue_depth", M) == 0
    assert not closing.done()  # it waits for the batch in flight
    recorder.gate.set()
    await closing
    assert await running == 2
    for q in queued:
        with pytest.raises(ModelNotReady, match="^model 'm' is shutting down$"):
            await q
    with pytest.raises(ModelNotReady, match="^model 'm' is shutting down$"):
        await scheduler.submit(3, {})
    assert recorder.batches == [[1]]


@guarded
async def test_close_of_an_idle_scheduler_returns() -> None:
    scheduler = make(Recorder())
    assert await scheduler.submit(1, {}) == 2
    await scheduler.close()
    with pytest.raises(ModelNotReady):
        await scheduler.submit_call(lambda _pipe: None)
    # One that never started (its model failed to load after it was built) closes too.
    never_started = Scheduler("m", [None], Recorder(), BatchingConfig(), Metrics())
    await never_started.close()


@guarded
async def test_higher_priority_runs_first_and_never_waits_for_lower_batchmates() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)  # the worker holds item 1; the rest queue up behind it
    queued = [
        asyncio.ensure_future(scheduler.submit(2, {})),
        asyncio.ensure_future(scheduler.submit(3, {}, priority=1)),
        asyncio.ensure_future(scheduler.submit(4, {})),
        asyncio.ensure_future(scheduler.submit(5, {}, priority=1)),
        asyncio.ensure_future(scheduler.submit(6, {}, priority=2, batchable=False)),
    ]
    await until(lambda: scheduler.depth == 5, "five items queued")
    recorder.gate.set()
    assert await asyncio.gather(busy, *queued) == [2, 4, 6, 8, 10, 12]
    # The priority items overtake the older ones and batch only with equals (or higher).
    assert recorder.batches == [[1], [6], [3, 5], [2, 4]]
    await scheduler.close()


@guarded
async def test_a_batch_takes_higher_priority_items_of_its_key() -> None:
    """The oldest item of the highest priority leads a batch whatever its key, and items of lower
    priority never join it."""
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    queued = [
        asyncio.ensure_future(scheduler.submit(2, {}, priority=1)),
        asyncio.ensure_future(scheduler.submit(3, {}, priority=2, key="other")),
        asyncio.ensure_future(scheduler.submit(4, {}, priority=2)),
    ]
    await until(lambda: scheduler.depth == 3, "three items queued")
    recorder.gate.set()
    assert await asyncio.gather(busy, *queued) == [2, 4, 6, 8]
    # 3 leads (oldest of priority 2); 4 (priority 2) leads the next and takes nothing of lower priority.
    assert recorder.batches == [[1], [3], [4], [2]]
    await scheduler.close()


# The delay tests below use a delay of an hour: an item that waited for the delay fails the guard, and no
# elapsed time is compared with a threshold a loaded machine could cross.
HOUR_MS = 3_600_000


@guarded
async def test_a_lone_item_on_an_idle_worker_runs_without_waiting_the_delay() -> None:
    """With an hour's delay, an idle worker still dispatches at once (the policy, not a timing race)."""
    recorder = Recorder()
    scheduler = make(recorder, max_queue_delay_ms=HOUR_MS)
    for value in (1, 2):  # the first call and one after the worker went idle again
        assert await scheduler.submit(value, {}) == value * 2
    assert recorder.batches == [[1], [2]]
    await scheduler.close()


@guarded
async def test_items_queued_while_a_batch_runs_form_the_next_batch_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=8, max_queue_delay_ms=HOUR_MS)
    running = asyncio.ensure_future(scheduler.submit(0, {}))
    await recorder.holding(1)  # the worker runs item 0 alone: it was idle
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in range(1, 4)]
    await until(lambda: scheduler.depth == 3, "three items queued")
    recorder.gate.set()
    # The previous batch had no batchmates, so the next one does not wait the delay for more.
    assert await asyncio.gather(running, *queued) == [0, 2, 4, 6]
    assert recorder.batches == [[0], [1, 2, 3]]
    await scheduler.close()


@guarded
async def test_after_a_batch_with_batchmates_the_next_waits_for_more_and_drops_cancelled_ones() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=3, max_queue_delay_ms=HOUR_MS)
    first = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await recorder.holding(1)  # the worker runs [1, 2]: a batch with a batchmate
    fourth, fifth = (asyncio.ensure_future(scheduler.submit(i, {})) for i in (4, 5))
    await until(lambda: scheduler.depth == 2, "items 4 and 5 queued")
    recorder.gate.set()
    assert [await f for f in first] == [2, 4]
    # Under load: the worker took items 4 and 5 and gathers a third (for an hour) instead of running them.
    await until(lambda: scheduler.depth == 0, "the worker took items 4 and 5")
    assert recorder.batches == [[1, 2]]
    fourth.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fourth
    sixth = asyncio.ensure_future(scheduler.submit(6, {}))
    # Item 6 wakes the gathering worker, which drops the cancelled item 4 and takes 6.
    await until(lambda: skipped(metrics, "cancelled") == 1, "the cancelled item left the batch")
    assert scheduler.depth == 0
    assert recorder.batches == [[1, 2]]  # [5, 6]: still gathering
    seventh = asyncio.ensure_future(scheduler.submit(7, {}))
    # The batch filled: no wait for the delay.
    assert await asyncio.gather(fifth, sixth, seventh) == [10, 12, 14]
    # The cancelled item gave its place to item 7: the batch is full and 4 is never computed.
    assert recorder.batches == [[1, 2], [5, 6, 7]]
    assert skipped(metrics, "cancelled") == 1
    await scheduler.close()


@guarded
async def test_a_batch_of_expired_items_does_not_count_as_load() -> None:
    """After a batch with batchmates, the worker would wait the delay for the next batch's; a batch whose
    items all expired computes nothing, so the item after it runs at once."""
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=2, max_queue_delay_ms=HOUR_MS)
    full = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await recorder.holding(1)
    expired = asyncio.ensure_future(scheduler.submit(3, {}, batchable=False, timeout=0.01))
    fourth = asyncio.ensure_future(scheduler.submit(4, {}))
    await until(lambda: scheduler.depth == 2, "items 3 and 4 queued")
    queued = time.monotonic()
    await until(lambda: time.monotonic() > queued + 0.01, "item 3's deadline passed")
    recorder.gate.set()
    assert await asyncio.gather(*full) == [2, 4]
    with pytest.raises(DeadlineExpired):
        await expired
    assert await fourth == 8  # alone: within GUARD_S, not after an hour
    assert recorder.batches == [[1, 2], [4]]
    await scheduler.close()


@guarded
async def test_items_queued_before_the_worker_starts_run_at_once() -> None:
    """A worker that has run no batch yet is not under load: what it finds queued runs without the delay."""
    recorder = Recorder()
    config = BatchingConfig(max_batch_size=4, max_queue_delay_ms=HOUR_MS)
    scheduler = Scheduler("m", [None], recorder, config, Metrics())
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await until(lambda: scheduler.depth == 2, "two items queued")
    scheduler.start()
    assert await asyncio.gather(*queued) == [2, 4]
    assert recorder.batches == [[1, 2]]
    await scheduler.close()


@guarded
async def test_under_load_a_batch_that_does_not_fill_runs_when_the_delay_ends() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=3, max_queue_delay_ms=1)
    full = [asyncio.ensure_future(scheduler.submit(i, {}, key="k")) for i in (1, 2, 3)]
    await recorder.holding(1)
    later = [
        asyncio.ensure_future(scheduler.submit(4, {}, key="k")),
        asyncio.ensure_future(scheduler.submit(5, {}, key="other")),
    ]
    await until(lambda: scheduler.depth == 2, "two items queued")
    recorder.gate.set()
    # Item 4 waits at most 1 ms (from its arrival) for a batchmate of its key; 5 is not one.
    assert await asyncio.gather(*full, *later) == [2, 4, 6, 8, 10]
    assert recorder.batches == [[1, 2, 3], [4], [5]]
    await scheduler.close()


@guarded
async def test_under_load_batches_already_full_run_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=2, max_queue_delay_ms=HOUR_MS)
    first = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await recorder.holding(1)
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (3, 4, 5, 6)]
    await until(lambda: scheduler.depth == 4, "four items queued")
    recorder.gate.set()
    # Under load, but each batch is full when formed: none waits the delay.
    assert await asyncio.gather(*first, *queued) == [2, 4, 6, 8, 10, 12]
    assert recorder.batches == [[1, 2], [3, 4], [5, 6]]
    await scheduler.close()


@pytest.mark.parametrize(
    ("delay_ms", "waited_s", "batches"),
    [
        (1, 0.0, [[1, 2], [3, 4]]),
        (HOUR_MS, HOUR_MS / 1000 - 0.5, [[1, 2], [3, 4]]),
        (HOUR_MS, HOUR_MS / 1000, [[1, 2], [3], [4]]),
    ],
)
@guarded
async def test_under_load_a_batch_gathers_until_its_clock_reaches_the_end_of_the_delay(
    clock: Clock, delay_ms: int, waited_s: float, batches: list[list[int]]
) -> None:
    """However short the delay (1 ms) or the time left of it (0.5 s of an hour), the batch waits for batchmates
    while its clock has not reached the oldest item's arrival plus the delay: with the clock held there, a
    batchmate that comes later still joins. With the clock exactly at the end, it runs without waiting."""
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=2, max_queue_delay_ms=delay_ms)
    first = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await recorder.holding(1)  # a batch with a batchmate: the next one is under load
    third = asyncio.ensure_future(scheduler.submit(3, {}))
    await until(lambda: scheduler.depth == 1, "item 3 queued")
    clock.now += waited_s
    recorder.gate.set()
    await until(lambda: scheduler.depth == 0, "the worker took item 3")
    fourth = asyncio.ensure_future(scheduler.submit(4, {}))
    assert await asyncio.gather(*first, third, fourth) == [2, 4, 6, 8]
    assert recorder.batches == batches
    await scheduler.close()


@guarded
async def test_a_failed_batch_does_not_retry_an_item_whose_deadline_came_while_it_ran(clock: Clock) -> None:
    calls: list[list[Any]] = []

    def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        calls.append(list(inputs))
        if len(inputs) > 1:
            clock.now += 5.0  # the batch ran until exactly item 2's deadline
            raise ValueError("this batch fails")
        return [x * 2 for x in inputs]

    metrics = Metrics()
    scheduler = Scheduler(
        "m", ["replica"], run, BatchingConfig(max_batch_size=2, max_queue_delay_ms=0), metrics
    )
    scheduler.start()
    lasting = asyncio.ensure_future(scheduler.submit(1, {}))
    due = asyncio.ensure_future(scheduler.submit(2, {}, timeout=5.0))
    assert await lasting == 2
    with pytest.raises(
        DeadlineExpired, match="^deadline passed while the request was computed; the work stopped$"
    ):
        await due
    assert calls == [[1, 2], [1]]
    assert skipped(metrics, "deadline") == 1
    assert skipped(metrics, "cancelled") == 0
    await scheduler.close()


@guarded
async def test_a_failed_batch_is_retried_without_its_members_that_left() -> None:
    """A batch fails; its items are retried one by one: one whose caller left meanwhile is skipped, and one
    whose caller leaves during its own retry stops there; the rest are computed."""
    from pipelined_server.batching import raise_if_abandoned

    release, retrying_2 = threading.Event(), threading.Event()
    calls: list[list[Any]] = []
    stopped: list[str] = []

    def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        calls.append(list(inputs))
        if len(inputs) > 1:
            assert release.wait(GUARD_S)
            raise ValueError("this batch fails")
        if inputs == [2]:  # runs until its caller leaves
            retrying_2.set()
            give_up = time.monotonic() + GUARD_S
            while time.monotonic() < give_up:
                try:
                    raise_if_abandoned()
                except BaseException as exc:
                    stopped.append(type(exc).__name__)
                    raise
                time.sleep(0.001)  # a step of work
        return [x * 2 for x in inputs]

    metrics = Metrics()
    scheduler = Scheduler(
        "m", ["replica"], run, BatchingConfig(max_batch_size=4, max_queue_delay_ms=0), metrics
    )
    scheduler.start()
    items = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2, 3, 4)]
    await until(lambda: len(calls) == 1, "the batch started")
    items[0].cancel()  # leaves while the batch runs: skipped in the retry
    release.set()
    assert await asyncio.to_thread(retrying_2.wait, GUARD_S)
    items[1].cancel()  # leaves during its own retry: stops it
    assert await asyncio.gather(items[2], items[3]) == [6, 8]
    assert calls == [[1, 2, 3, 4], [2], [3], [4]]
    assert stopped == ["Abandoned"]
    assert skipped(metrics, "cancelled") == 2
    await scheduler.close()


@guarded
async def test_metrics_count_queue_time_batch_sizes_and_pipeline_work() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_queue_delay_ms=0)
    assert scheduler.busy_s == 0.0
    began = time.monotonic()
    first = asyncio.ensure_future(scheduler.submit(1, {}))
    await recorder.holding(1)
    held = time.monotonic()  # the worker computes item 1 from before this moment
    rest = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3, 4)]
    await until(lambda: scheduler.depth == 3, "three items queued")
    assert metrics.value("pipelined_queue_depth", M) == 3
    queued = time.monotonic()
    # Hold the pipeline until the clock has moved 50 ms, so queue and busy times are worth comparing.
    await until(lambda: time.monotonic() >= queued + 0.05, "50 ms passed")
    released = time.monotonic()
    recorder.gate.set()
    assert await asyncio.gather(first, *rest) == [2, 4, 6, 8]
    ended = time.monotonic()
    assert recorder.batches == [[1], [2, 3, 4]]

    def sample(name: str, suffix: str) -> float:
        return metrics.value(f"{name}_{suffix}", M)

    assert sample("pipelined_batch_size", "count") == 2 and sample("pipelined_batch_size", "sum") == 4
    assert metrics.value("pipelined_batch_size_bucket", {**M, "le": "1.0"}) == 1
    assert metrics.value("pipelined_pipeline_calls_total", M) == 2
    assert metrics.value("pipelined_pipeline_items_total", M) == 4
    assert metrics.value("pipelined_queue_depth", M) == 0
    # One queue time per item. Items 2-4 waited behind item 1 at least from `queued` to `released`; no item
    # waited longer than the test ran.
    assert sample("pipelined_queue_time_seconds", "count") == 4
    total = sample("pipelined_queue_time_seconds", "sum")
    assert 3 * (released - queued) <= total <= 4 * (ended - began)
    # The replica was busy at least while held, and never longer than the test ran.
    assert released - held <= scheduler.busy_s <= ended - began
    await scheduler.close()


@guarded
async def test_work_running_when_its_caller_leaves_stops_and_counts_as_skipped() -> None:
    """A call that checks between steps (as the pipeline hooks do before every forward and at every token)
    ends once its caller cancels or its deadline passes; the next item runs at once."""
    from pipelined_server.batching import raise_if_abandoned

    started = threading.Event()

    def long_work(replica: Any) -> str:
        started.set()
        give_up = time.monotonic() + GUARD_S
        while time.monotonic() < give_up:  # until abandoned
            raise_if_abandoned()
            time.sleep(0.001)  # a step of work
        return "never abandoned"

    metrics = Metrics()
    scheduler = Scheduler("m", [None], Recorder(), BatchingConfig(max_batch_size=1), metrics)
    scheduler.start()
    # The caller cancels: nobody is left to answer; the work stops.
    job = asyncio.ensure_future(scheduler.submit_call(long_work))
    assert await asyncio.to_thread(started.wait, GUARD_S)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    assert await scheduler.submit(5, {}) == 10  # served as soon as the abandoned work stopped
    assert skipped(metrics, "cancelled") == 1 and skipped(metrics, "deadline") == 0
    # The deadline passes while it runs: the caller hears so.
    started.clear()
    job = asyncio.ensure_future(scheduler.submit_call(long_work, timeout=0.5))
    assert await asyncio.to_thread(started.wait, GUARD_S)
    with pytest.raises(
        DeadlineExpired, match="^deadline passed while the request was computed; the work stopped$"
    ):
        await job
    assert await scheduler.submit(6, {}) == 12
    assert skipped(metrics, "cancelled") == 1 and skipped(metrics, "deadline") == 1
    assert metrics.value("pipelined_pipeline_items_total", M) == 2  # the two served items only
    await scheduler.close()


@guarded
async def test_a_batch_abandoned_while_it_runs_stops_only_when_every_member_left() -> None:
    """Two callers share a running batch: one leaving keeps it going for the other; the batch stops once
    both have left (one cancelled, one past its deadline), each counted under its own reason."""
    from pipelined_server.batching import raise_if_abandoned

    release = threading.Event()
    arrived = threading.Event()
    stopped: list[BaseException] = []

    def run(replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        arrived.set()
        try:
            while not release.wait(0.001):
                raise_if_abandoned()
        except BaseException as exc:
            stopped.append(exc)
            raise
        return [x * 2 for x in inputs]

    metrics = Metrics()
    scheduler = Scheduler("m", [None], run, BatchingConfig(max_batch_size=2, max_queue_delay_ms=0), metrics)
    scheduler.start()
    a = asyncio.ensure_future(scheduler.submit(1, {}))
    b = asyncio.ensure_future(scheduler.submit(2, {}, timeout=GUARD_S * 10))
    assert await asyncio.to_thread(arrived.wait, GUARD_S)
    a.cancel()
    with pytest.raises(asyncio.CancelledError):
        await a
    release.set()
    assert await b == 4  # its batchmate left; it is still computed
    assert stopped == []
    release.clear()
    arrived.clear()
    c = asyncio.ensure_future(scheduler.submit(3, {}))
    d = asyncio.ensure_future(scheduler.submit(4, {}, timeout=0.5))
    assert await asyncio.to_thread(arrived.wait, GUARD_S)
    c.cancel()
    with pytest.raises(DeadlineExpired, match="while the request was computed"):
        await d
    assert [type(e).__name__ for e in stopped] == ["Abandoned"]
    with pytest.raises(asyncio.CancelledError):
        await c
    # Item 1 was computed although its caller left (its batchmate waited): not skipped.
    assert skipped(metrics, "cancelled") == 1 and skipped(metrics, "deadline") == 1
    assert metrics.value("pipelined_pipeline_items_total", M) == 2
    release.set()
    await scheduler.close()


@guarded
async def test_a_worker_survives_its_thread_refusing_work(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If the worker's thread cannot take a batch (as when the interpreter shuts down), the batch's callers
    get the error, it is logged, and the worker serves the next batch."""
    import concurrent.futures.thread

    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(0, {}))
    await recorder.holding(1)
    refused = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await until(lambda: scheduler.depth == 2, "two items queued")
    monkeypatch.setattr(concurrent.futures.thread, "_shutdown", True)
    with caplog.at_level(logging.ERROR, logger="pipelined_server.batching.scheduler"):
        recorder.gate.set()
        assert await busy == 0
        for future in refused:
            with pytest.raises(RuntimeError, match="cannot schedule new futures"):
                await future
    monkeypatch.undo()
    assert await scheduler.submit(3, {}) == 6
    records = [r for r in caplog.records if r.name == "pipelined_server.batching.scheduler"]
    assert [r.getMessage() for r in records] == ["scheduler m: batch failed outside the pipeline"]
    assert records[0].exc_info is not None
    assert recorder.batches == [[0], [3]]
    await scheduler.close()


@guarded
async def test_gather_or_cancel_answers_in_order_and_the_first_failure_frees_the_rest() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = make(recorder, metrics, max_batch_size=1)
    busy = asyncio.ensure_future(scheduler.submit(0, {}))
    await recorder.holding(1)

    async def fails_once_the_rest_queued() -> None:
        await until(lambda: scheduler.depth == 2, "two items queued")
        raise InvalidInput("input 3 is bad")

    with pytest.raises(InvalidInput, match="input 3 is bad"):
        await gather_or_cancel(
            [scheduler.submit(1, {}), scheduler.submit(2, {}), fails_once_the_rest_queued()]
        )
    # The other inputs of the request left the queue at once, never computed.
    await until(lambda: scheduler.depth == 0, "the rest cancelled")
    assert skipped(metrics, "cancelled") == 2
    recorder.gate.set()
    assert await busy == 0
    assert await gather_or_cancel([scheduler.submit(i, {}) for i in (5, 6, 7)]) == [10, 12, 14]
    assert recorder.batches == [[0], [5], [6], [7]]
    await scheduler.close()


@guarded
async def test_spare_work_is_timed_apart_and_idle_means_it_starts_at_once() -> None:
    """Work below priority 0 (a live stream's re-decode on an idle model) counts in busy_s and, apart, in
    spare_busy_s, which admission leaves out of a stream's cost; `idle` is false while the replica computes
    or anything waits."""
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    assert scheduler.idle
    spare = asyncio.ensure_future(scheduler.submit(1, {}, priority=-1))
    await recorder.holding(1)
    assert not scheduler.idle  # the only replica computes
    recorder.gate.set()
    assert await spare == 2
    assert scheduler.idle
    assert scheduler.spare_busy_s == scheduler.busy_s > 0
    spent = scheduler.busy_s
    assert await scheduler.submit(2, {}) == 4
    assert scheduler.spare_busy_s == spent < scheduler.busy_s
    await scheduler.close()
