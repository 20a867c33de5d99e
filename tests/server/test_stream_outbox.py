"""A live stream's outbox stays bounded when its client does not read: interims merge, finals and events
are kept up to the limit, then the stream ends with RESOURCE_EXHAUSTED naming the setting."""

from __future__ import annotations

import asyncio

import pytest
from pipelined.v1 import speech_pb2
from pipelined_server.errors import QueueFull
from pipelined_server.streaming.outbox import Outbox


def interim(text: str) -> speech_pb2.StreamingRecognizeResponse:
    return speech_pb2.StreamingRecognizeResponse(results=[speech_pb2.StreamingRecognitionResult(text=text)])


def final(text: str) -> speech_pb2.StreamingRecognizeResponse:
    return speech_pb2.StreamingRecognizeResponse(
        results=[speech_pb2.StreamingRecognitionResult(text=text, is_final=True)]
    )


def event() -> speech_pb2.StreamingRecognizeResponse:
    return speech_pb2.StreamingRecognizeResponse(speech_event=speech_pb2.SPEECH_EVENT_SPEECH_STARTED)


def drain(outbox: Outbox) -> list[str]:
    async def take() -> list[str]:
        return [",".join(r.text for r in (await outbox.get()).results) or "event" for _ in range(len(outbox))]

    return asyncio.run(take())


def test_waiting_interims_are_replaced_by_the_next_and_finals_kept_in_order() -> None:
    outbox = Outbox(limit=8)
    for item in [
        interim("a"),
        interim("a b"),
        final("a b"),
        interim("c"),
        interim("c d"),
        event(),
        interim("e"),
    ]:
        outbox.put(item)
    assert drain(outbox) == ["a b", "a b", "c d", "event", "e"]
    assert outbox.merged == 2


def test_finals_backing_up_past_the_limit_end_the_stream() -> None:
    outbox = Outbox(limit=3)
    for item in [final("0"), interim("x"), final("1"), interim("dropped: the outbox is full")]:
        outbox.put(item)
    assert len(outbox) == 3
    with pytest.raises(QueueFull, match="max_unread_responses=3"):
        outbox.put(final("2"))
    assert drain(outbox) == ["0", "x", "1"]


def test_the_end_of_the_stream_is_always_queued() -> None:
    outbox = Outbox(limit=1)
    outbox.put(final("0"))
    done = object()
    outbox.put_control(done)

    async def take() -> list[object]:
        return [await outbox.get(), await outbox.get()]

    assert asyncio.run(take())[1] is done


def test_the_count_of_waiting_responses_follows_puts_merges_sends_and_the_end() -> None:
    counted: list[int] = []
    outbox = Outbox(limit=2, on_change=counted.append)
    outbox.put(interim("a"))
    outbox.put(interim("a b"))  # replaces the waiting one: no change
    outbox.put(final("a b"))
    outbox.put(interim("dropped: the outbox is full"))
    assert sum(counted) == len(outbox) == 2
    assert drain(outbox) == ["a b", "a b"] and sum(counted) == 0
    outbox.put(final("c"))
    assert not outbox.ended.is_set()
    end = QueueFull("the end")
    outbox.put_control(end)
    assert outbox.ended.is_set() and outbox.end is end
    assert sum(counted) == len(outbox) == 2
    outbox.clear()
    assert sum(counted) == len(outbox) == 0
