"""Scheduler semantics with a recording runner: batching, keys, queue limits, deadlines, cancellation."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
from pipelined_server.batching import Scheduler
from pipelined_server.config import BatchingConfig
from pipelined_server.errors import DeadlineExpired, InvalidInput, ModelNotReady, QueueFull
from pipelined_server.metrics import Metrics


class Recorder:
    """Doubles its inputs and records each batch; `gate` holds the worker to build up a queue."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, replica: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        self.gate.wait(10)
        self.batches.append(list(inputs))
        if any(x == "bad" for x in inputs):
            raise ValueError("bad input")
        return [x * 2 for x in inputs]


def make(recorder: Recorder, **batching: Any) -> Scheduler:
    config = BatchingConfig(**{"max_batch_size": 4, "max_queue_delay_ms": 50, **batching})
    scheduler = Scheduler("m", [None], recorder, config, Metrics())
    scheduler.start()
    return scheduler


async def test_concurrent_requests_share_batches_up_to_the_limit() -> None:
    recorder = Recorder()
    scheduler = make(recorder)
    results = await asyncio.gather(*(scheduler.submit(i, {}) for i in range(6)))
    assert results == [i * 2 for i in range(6)]
    assert [len(b) for b in recorder.batches] == [4, 2]
    await scheduler.close()


async def test_keys_and_arguments_separate_batches_and_unbatchable_items_run_alone() -> None:
    recorder = Recorder()
    scheduler = make(recorder)
    await asyncio.gather(
        scheduler.submit(1, {}, key="a"),
        scheduler.submit(2, {}, key="b"),
        scheduler.submit(3, {"x": 1}, key="a"),
        scheduler.submit(4, {}, key="a"),
        scheduler.submit(5, {}, key="a", batchable=False),
    )
    assert sorted(map(sorted, recorder.batches)) == [[1, 4], [2], [3], [5]]
    await scheduler.close()


async def test_full_queue_answers_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=1, max_queue_size=2)
    first = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)  # the worker holds item 1
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3)]
    await asyncio.sleep(0)
    with pytest.raises(QueueFull, match="max_queue_size=2"):
        await scheduler.submit(4, {})
    recorder.gate.set()
    assert await first == 2 and [await q for q in queued] == [4, 6]
    await scheduler.close()


async def test_expired_and_cancelled_items_are_never_computed() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    scheduler = Scheduler("m", [None], recorder, BatchingConfig(max_batch_size=1), metrics)
    scheduler.start()
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)
    expiring = asyncio.ensure_future(scheduler.submit(2, {}, timeout=0.01))
    cancelled = asyncio.ensure_future(scheduler.submit(3, {}))
    await asyncio.sleep(0.05)
    cancelled.cancel()
    recorder.gate.set()
    assert await busy == 2
    with pytest.raises(DeadlineExpired):
        await expiring
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    await scheduler.submit(4, {})
    assert recorder.batches == [[1], [4]]
    assert metrics.value("pipelined_requests_skipped_total", {"model": "m", "reason": "deadline"}) == 1
    assert metrics.value("pipelined_requests_skipped_total", {"model": "m", "reason": "cancelled"}) == 1
    await scheduler.close()


async def test_a_failing_input_fails_alone() -> None:
    recorder = Recorder()
    scheduler = make(recorder)
    results = await asyncio.gather(
        scheduler.submit(1, {}), scheduler.submit("bad", {}), scheduler.submit(3, {}), return_exceptions=True
    )
    assert results[0] == 2 and results[2] == 6
    assert isinstance(results[1], InvalidInput) and "bad input" in str(results[1])
    await scheduler.close()


async def test_replicas_compute_batches_in_parallel() -> None:
    """Two replicas: two batches run at the same time (each runner waits for the other at a barrier)."""
    barrier = threading.Barrier(2, timeout=5)
    seen: list[str] = []

    def run(replica: str, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        barrier.wait()
        seen.append(replica)
        return list(inputs)

    config = BatchingConfig(max_batch_size=1, max_queue_delay_ms=0)
    scheduler = Scheduler("m", ["a", "b"], run, config, Metrics())
    scheduler.start()
    assert await asyncio.gather(scheduler.submit(1, {}), scheduler.submit(2, {})) == [1, 2]
    assert sorted(seen) == ["a", "b"]
    await scheduler.close()


async def test_calls_run_alone_on_the_worker_thread_in_queue_order() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    threads: list[str] = []

    def call(value: Any) -> Any:
        threads.append(threading.current_thread().name)
        if value == "bad":
            raise ValueError("bad call")
        recorder.batches.append([f"call-{value}"])
        return value

    first = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)  # the worker holds item 1; the rest queue up behind it
    rest = [
        asyncio.ensure_future(scheduler.submit_call(lambda _pipe: call("a"))),
        asyncio.ensure_future(scheduler.submit(2, {})),
        asyncio.ensure_future(scheduler.submit_call(lambda _pipe: call("bad"))),
        asyncio.ensure_future(scheduler.submit(3, {})),
    ]
    recorder.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert results[:3] == [2, "a", 4] and results[4] == 6
    assert isinstance(results[3], InvalidInput) and "bad call" in str(results[3])
    # Calls never join a batch, and the plain items queued around them still batch together.
    assert recorder.batches == [[1], ["call-a"], [2, 3]]
    assert all(name.startswith("pipeline-m") for name in threads)
    await scheduler.close()


async def test_a_cancelled_caller_frees_its_queue_slot_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=1, max_queue_size=2)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)
    waiting = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (2, 3)]
    await asyncio.sleep(0)
    assert scheduler.depth == 2
    for task in waiting:
        task.cancel()
    await asyncio.sleep(0)
    assert scheduler.depth == 0
    with pytest.raises(QueueFull, match="adds 3"):
        scheduler.ensure_room(3)
    scheduler.ensure_room(2)
    recorder.gate.set()
    assert await busy == 2
    assert recorder.batches == [[1]]
    await scheduler.close()


async def test_close_answers_the_batch_in_flight_and_refuses_the_rest() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=1)
    running = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)
    queued = asyncio.ensure_future(scheduler.submit(2, {}))
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(scheduler.close())
    await asyncio.sleep(0.05)
    recorder.gate.set()
    await closing
    assert await running == 2
    with pytest.raises(ModelNotReady):
        await queued
    with pytest.raises(ModelNotReady):
        await scheduler.submit(3, {})


async def test_higher_priority_runs_first_and_never_waits_for_lower_batchmates() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_queue_delay_ms=0)
    busy = asyncio.ensure_future(scheduler.submit(1, {}))
    await asyncio.sleep(0.05)  # the worker holds item 1; the rest queue up behind it
    queued = [
        asyncio.ensure_future(scheduler.submit(2, {})),
        asyncio.ensure_future(scheduler.submit(3, {}, priority=1)),
        asyncio.ensure_future(scheduler.submit(4, {})),
        asyncio.ensure_future(scheduler.submit(5, {}, priority=1)),
    ]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert await asyncio.gather(busy, *queued) == [2, 4, 6, 8, 10]
    # The two priority items overtake the older ones and batch only with each other.
    assert recorder.batches == [[1], [3, 5], [2, 4]]
    await scheduler.close()


async def test_a_lone_item_on_an_idle_worker_runs_without_waiting_the_delay() -> None:
    """With a 2 s delay, an idle worker still dispatches at once (the policy, not a timing race)."""
    recorder = Recorder()
    scheduler = make(recorder, max_queue_delay_ms=2000)
    for value in (1, 2):  # the first call and one after the worker went idle again
        started = time.monotonic()
        assert await scheduler.submit(value, {}) == value * 2
        assert time.monotonic() - started < 1.0
    assert recorder.batches == [[1], [2]]
    await scheduler.close()


async def test_items_queued_while_a_batch_runs_form_the_next_batch_at_once() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    scheduler = make(recorder, max_batch_size=8, max_queue_delay_ms=2000)
    running = asyncio.ensure_future(scheduler.submit(0, {}))
    await asyncio.sleep(0.05)  # the worker runs item 0 alone: it was idle
    queued = [asyncio.ensure_future(scheduler.submit(i, {})) for i in range(1, 4)]
    await asyncio.sleep(0)
    started = time.monotonic()
    recorder.gate.set()
    assert await asyncio.gather(running, *queued) == [0, 2, 4, 6]
    # The previous batch was not full, so the next one does not wait the 2 s for more batchmates.
    assert time.monotonic() - started < 1.0
    assert recorder.batches == [[0], [1, 2, 3]]
    await scheduler.close()


async def test_after_a_full_batch_the_next_waits_for_batchmates_and_drops_cancelled_ones() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    metrics = Metrics()
    config = BatchingConfig(max_batch_size=2, max_queue_delay_ms=2000)
    scheduler = Scheduler("m", [None], recorder, config, metrics)
    scheduler.start()
    full = [asyncio.ensure_future(scheduler.submit(i, {})) for i in (1, 2)]
    await asyncio.sleep(0.05)  # the worker runs [1, 2]: a full batch
    third = asyncio.ensure_future(scheduler.submit(3, {}))
    await asyncio.sleep(0)
    recorder.gate.set()
    assert [await f for f in full] == [2, 4]
    await asyncio.sleep(0.05)  # under load: item 3 is gathering batchmates
    assert recorder.batches == [[1, 2]]
    third.cancel()
    await asyncio.sleep(0)
    started = time.monotonic()
    fourth, fifth = (asyncio.ensure_future(scheduler.submit(i, {})) for i in (4, 5))
    assert await asyncio.gather(fourth, fifth) == [8, 10]
    assert time.monotonic() - started < 1.0  # the batch filled: no wait for the delay
    with pytest.raises(asyncio.CancelledError):
        await third
    # The cancelled item gave its place to item 5: the batch is full and 3 is never computed.
    assert recorder.batches == [[1, 2], [4, 5]]
    assert metrics.value("pipelined_requests_skipped_total", {"model": "m", "reason": "cancelled"}) == 1
    await scheduler.close()


async def test_running_work_stops_when_its_caller_leaves_and_counts_as_skipped() -> None:
    """A call that checks between steps (as the pipeline hooks do before every forward and at every token)
    ends once its caller cancels or its deadline passes; the next item runs at once."""
    from pipelined_server.batching import Abandoned, raise_if_abandoned

    started, steps = threading.Event(), []

    def long_work(replica: Any) -> str:
        started.set()
        for step in range(2000):  # ~20 s unless abandoned
            raise_if_abandoned()
            steps.append(step)
            time.sleep(0.01)
        return "done"

    metrics = Metrics()
    scheduler = Scheduler("m", [None], Recorder(), BatchingConfig(max_batch_size=1), metrics)
    scheduler.start()
    for leave in ("cancel", "deadline"):
        steps.clear()
        started.clear()
        timeout = 0.2 if leave == "deadline" else None
        job = asyncio.ensure_future(scheduler.submit_call(long_work, timeout=timeout))
        await asyncio.to_thread(started.wait, 10)
        if leave == "cancel":
            job.cancel()
        with pytest.raises((asyncio.CancelledError, Abandoned, DeadlineExpired)):
            await job
        assert await scheduler.submit(5, {}) == 10  # served as soon as the abandoned work stopped
        assert len(steps) < 1000
    labels = {"model": "m"}
    assert metrics.value("pipelined_requests_skipped_total", {**labels, "reason": "cancelled"}) == 1
    assert metrics.value("pipelined_requests_skipped_total", {**labels, "reason": "deadline"}) == 1
    assert metrics.value("pipelined_pipeline_items_total", labels) == 2  # the two served items only
    await scheduler.close()
