"""The asyncio client gives what the sync client gives (and so what the in-process pipelines give, which
the sync tests check) for every kind of task: the same inputs, call arguments and results, lists in
order with bounded requests in flight, async iterables, and streams as async iterators.

Servers and tiny models are the sync tests' own fixtures: conftest.py (ASR), text_fixtures.py (text),
test_vision_tasks.py (vision, multimodal, audio)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest
import test_vision_tasks
from harness import ServerThread
from pipelined import Client, NotFound
from pipelined.aio import Client as AioClient
from pipelined.aio.base import AsyncPipeline
from pipelined.aio.generic import AsyncGenericPipeline
from pipelined.pipelines.generic import GenericPipeline
from test_vision_tasks import CLIPS, IMAGES, WORDS, _chat, assert_same
from text_fixtures import text_server
from tiny_models import tiny_audio

# The vision server's module fixtures, shared (pytest finds fixtures by module attribute).
model_dirs = test_vision_tasks.model_dirs
vision_server = test_vision_tasks.server

ASR = "automatic-speech-recognition"
TEXTS = ["john lives in paris", "the weather is good today", "hello world", "mary visited berlin"]


async def agen(items: Iterable[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def both(
    target: str,
    task: str,
    model: str | None,
    *args: Any,
    defaults: dict[str, Any] | None = None,
    **kwargs: Any,
) -> tuple[Any, Any]:
    """(asyncio result, sync result) of the same call."""
    defaults = defaults or {}
    async with AioClient(target, timeout=120) as aio:
        remote = await aio.pipeline(task, model=model, **defaults)(*args, **kwargs)
    with Client(target, timeout=120) as sync:
        expected = sync.pipeline(task, model=model, **defaults)(*args, **kwargs)
    return remote, expected


# ------------------------------------------------------------------------------------------------ speech


async def test_asr(asr_server: ServerThread) -> None:
    clips = [tiny_audio(s, seed=i) for i, s in enumerate([1.0, 0.6, 1.4, 0.8, 1.1])]
    assert_same(*await both(asr_server.target, ASR, None, clips[0]))
    assert_same(*await both(asr_server.target, ASR, "tiny-ctc", clips, defaults={"max_in_flight": 2}))
    async with AioClient(asr_server.target, timeout=120) as aio:
        pipe = aio.pipeline(ASR, model="tiny-ctc", max_in_flight=2)
        streamed = [r async for r in pipe.iterate(agen(clips))]
        segments = [s async for s in aio.pipeline(ASR).stream_file(clips[2])]
    with Client(asr_server.target, timeout=120) as sync:
        assert_same(streamed, sync.pipeline(ASR, model="tiny-ctc")(clips))
        assert_same(segments, list(sync.pipeline(ASR).stream_file(clips[2])))


# ------------------------------------------------------------------------------------------------ text


async def test_text_classification_lists_split_into_requests_in_order() -> None:
    server = text_server()
    inputs = [f"{t} {i}" for i in range(4) for t in TEXTS]
    defaults = {"inputs_per_request": 3, "max_in_flight": 2}
    labels = {
        "model": "tiny-sentiment",
        "task": "text-classification",
        "method": "ClassifyText",
        "code": "OK",
    }
    calls_before = server.metric("pipelined_requests_total", **labels)
    assert_same(*await both(server.target, "sentiment-analysis", "tiny-sentiment", inputs, defaults=defaults))
    requests = server.metric("pipelined_requests_total", **labels) - calls_before
    assert requests == 2 * 6, "a list of 16 inputs goes in 6 requests of up to 3, as the sync client sends it"
    assert_same(*await both(server.target, "text-classification", "tiny-sentiment", TEXTS[0], top_k=2))
    # A single string: transformers' [best label], not the bare dict.
    remote, expected = await both(server.target, "text-classification", "tiny-sentiment", TEXTS[1])
    assert isinstance(remote, list) and len(remote) == 1
    assert_same(remote, expected)


async def test_zero_shot_positional_labels() -> None:
    target = text_server().target
    labels = ["sport", "politics", "science"]
    assert_same(*await both(target, "zero-shot-classification", "tiny-nli", TEXTS, labels))
    async with AioClient(target) as aio:
        pipe = aio.pipeline("zero-shot-classification", model="tiny-nli")
        iterated = [r async for r in pipe.iterate(agen(TEXTS[:2]), candidate_labels=labels)]
    assert_same(iterated, (await both(target, "zero-shot-classification", "tiny-nli", TEXTS[:2], labels))[1])


async def test_text_generation_and_stream() -> None:
    target = text_server().target
    chat = [{"role": "user", "content": "what is the capital of france"}]
    assert_same(*await both(target, "text-generation", "tiny-lm", "hello world", max_new_tokens=6))
    assert_same(*await both(target, "text-generation", "tiny-lm", ["hello world", chat], max_new_tokens=4))
    kwargs = {"max_new_tokens": 12, "do_sample": True, "seed": 3}
    async with AioClient(target, timeout=120) as aio:
        pipe = aio.pipeline("text-generation", model="tiny-lm")
        pieces = [p async for p in pipe.stream("hello world", **kwargs)]
        # Leaving a stream early cancels it; the model serves the next call.
        async with contextlib.aclosing(pipe.stream("hello world", max_new_tokens=200)) as stream:
            await anext(stream)
        after = await pipe("hello world", max_new_tokens=3)
    with Client(target, timeout=120) as sync:
        sync_pipe = sync.pipeline("text-generation", model="tiny-lm")
        assert len(pieces) > 1 and pieces == list(sync_pipe.stream("hello world", **kwargs))
        assert_same(after, sync_pipe("hello world", max_new_tokens=3))


# ------------------------------------------------------------------------------------------------ vision


async def test_image_classification(vision_server: ServerThread) -> None:
    task, target = "image-classification", vision_server.target
    assert_same(*await both(target, task, task, IMAGES[0], top_k=2, function_to_apply="sigmoid"))
    assert_same(*await both(target, task, task, IMAGES, defaults={"max_in_flight": 2}))
    async with AioClient(target, timeout=120) as aio:
        iterated = [r async for r in aio.pipeline(task, model=task).iterate(agen(IMAGES))]
        from_sync_iterator = await aio.pipeline(task, model=task)(iter(IMAGES))
    expected = (await both(target, task, task, IMAGES))[1]
    assert_same(iterated, expected)
    assert_same(from_sync_iterator, expected)


async def test_zero_shot_object_detection_positional_labels(vision_server: ServerThread) -> None:
    task = "zero-shot-object-detection"
    assert_same(*await both(vision_server.target, task, task, IMAGES[1], ["cat", "dog"], threshold=0.0))


# ------------------------------------------------------------------------------------------------ multimodal


async def test_image_text_to_text_and_stream(vision_server: ServerThread) -> None:
    task, target = "image-text-to-text", vision_server.target
    chat = _chat(IMAGES[1], "describe the photo")
    assert_same(*await both(target, task, task, images=IMAGES[0], text="<image> what is this"))
    assert_same(*await both(target, task, task, chat, max_new_tokens=5))
    chats = [_chat(IMAGES[0], "hello"), _chat(IMAGES[3], "what color")]
    assert_same(*await both(target, task, task, text=chats, return_full_text=False))
    async with AioClient(target, timeout=120) as aio:
        pieces = [p async for p in aio.pipeline(task, model=task).stream(text=chat, max_new_tokens=8)]
    with Client(target, timeout=120) as sync:
        assert pieces and pieces == list(sync.pipeline(task, model=task).stream(text=chat, max_new_tokens=8))


async def test_document_question_answering(vision_server: ServerThread) -> None:
    task, target = "document-question-answering", vision_server.target
    assert_same(*await both(target, task, task, IMAGES[0], "what is the total", word_boxes=WORDS, top_k=2))
    batch = [{"image": IMAGES[1], "question": "what date", "word_boxes": WORDS}] * 2
    assert_same(*await both(target, task, task, batch))


# ------------------------------------------------------------------------------------------------ audio


async def test_audio_classification(vision_server: ServerThread) -> None:
    task, target = "audio-classification", vision_server.target
    assert_same(*await both(target, task, task, CLIPS[0], top_k=2))
    assert_same(*await both(target, task, task, CLIPS, defaults={"max_in_flight": 3}))


# ------------------------------------------------------------------------------------------------ generic


async def test_generic_call() -> None:
    target = text_server().target
    async with AioClient(target, timeout=120) as aio:
        pipe = aio.pipeline("table-question-answering")
        assert isinstance(pipe, AsyncGenericPipeline)
        with pytest.raises(NotFound, match="table-question-answering"):
            await pipe({"table": {"a": ["1"]}, "query": "what?"})
        from pipelined.aio.registry import twin

        generic: AsyncPipeline = twin(GenericPipeline(aio, "token-classification", "tiny-ner"))
        remote = await generic(TEXTS, aggregation_strategy="simple")
        iterated = [r async for r in generic.iterate(agen(TEXTS), aggregation_strategy="simple")]
    with Client(target, timeout=120) as sync:
        sync_pipe = GenericPipeline(sync, "token-classification", "tiny-ner")
        expected = sync_pipe(TEXTS, aggregation_strategy="simple")
        assert_same(remote, expected)
        assert_same(iterated, [sync_pipe(t, aggregation_strategy="simple") for t in TEXTS])


# ------------------------------------------------------------------------------------------------ client


async def test_models_and_errors() -> None:
    target = text_server().target
    async with AioClient(target) as aio:
        with Client(target) as sync:
            assert await aio.model("tiny-lm") == sync.model("tiny-lm")
            assert await aio.models("fill-mask") == sync.models("fill-mask")
        with pytest.raises(NotFound):
            await aio.model("no-such-model")
        with pytest.raises(TypeError, match="bogus"):
            aio.pipeline("fill-mask", model="tiny-mlm", bogus=1)
        with pytest.raises(TypeError, match="bogus"):
            await aio.pipeline("image-classification").__call__(IMAGES[0], bogus=1)
