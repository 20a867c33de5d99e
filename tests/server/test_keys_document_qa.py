"""The document-question-answering adapter's batching rule (tasks/document_qa.py `_load`) through the real
scheduler and pipeline: the pipeline pads a batch to its longest token sequence, so only identical questions
over identical words (and page sizes) share a batch; every answer must equal the in-process pipeline's
unbatched one, and the batch sizes in the metrics must be those the rule claims. Fast (no server, the tiny
model cached on disk): the `document_qa` mutation group runs this file per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from pathlib import Path
from typing import Any

import pytest
from documents import WORDS, render_page, require_ocr
from model_cache import cached_model
from pipelined.v1 import multimodal_pb2
from pipelined_server.errors import InvalidInput
from pipelined_server.images import ImageLimits
from pipelined_server.tasks import document_qa, ocr
from serving import Run, Serving, assert_protos_close, in_process, png, spec
from tiny_vision_models import build_tiny_layoutlm, tiny_image

pytestmark = pytest.mark.timeout(120)

TASK = document_qa.TASK


@functools.cache
def model_dir() -> Path:
    return cached_model(build_tiny_layoutlm)


def local() -> Any:
    return in_process(TASK, model_dir())


def question(
    text: str, image: Any = None, words: list[tuple[str, list[int]]] = ()
) -> multimodal_pb2.DocumentQuestion:
    boxes = [multimodal_pb2.DocumentWord(word=w, x0=b[0], y0=b[1], x1=b[2], y1=b[3]) for w, b in words]
    proto = multimodal_pb2.DocumentQuestion(question=text, word_boxes=boxes)
    if image is not None:
        proto.image.CopyFrom(png(image))
    return proto


def expected(text: str, image: Any = None, words: list[tuple[str, list[int]]] | None = None) -> Any:
    kwargs = {"word_boxes": words} if words else {}
    return multimodal_pb2.AnswerDocumentQuestionResponse(
        results=[document_qa.answers(local()(image=image, question=text, top_k=2, **kwargs))], model=TASK
    )


def run(questions: list[multimodal_pb2.DocumentQuestion]) -> Run:
    requests = [
        multimodal_pb2.AnswerDocumentQuestionRequest(model=TASK, questions=[q], top_k=2) for q in questions
    ]

    async def scenario() -> Run:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            return await serving.concurrently(TASK, document_qa.ADAPTER, requests, items=len(requests))

    return asyncio.run(scenario())


def test_only_the_same_question_over_the_same_words_and_page_size_share_a_batch() -> None:
    small = [tiny_image(seed=140 + i, size=(40, 30)) for i in range(2)]
    large = tiny_image(seed=142, size=(64, 48))
    cases: list[tuple[str, Any, list[tuple[str, list[int]]]]] = [
        ("what is the total", small[0], WORDS),
        ("what is the total", small[1], WORDS),  # other pixels, same size and words: batched with the first
        ("what is the date", small[0], WORDS),  # another question
        ("what is the total", small[0], WORDS[:3]),  # other words
        ("what is the total", small[0], [*WORDS[:4], ("red", [500, 500, 600, 560])]),  # one box moved
        ("what is the total", large, WORDS),  # another page size
        ("what is the total", None, WORDS),  # no page
    ]
    result = run([question(*c) for c in cases])
    for served, case in zip(result.responses, cases, strict=True):
        assert_protos_close(served, expected(*case))
    assert result.batches == collections.Counter({2: 1, 1: 5})
    assert result.pipeline_calls == 6


def test_a_page_read_by_ocr_batches_with_the_same_words_given() -> None:
    """OCR runs while the items are made, for the pages sent without word boxes only: its words are the key,
    as if the caller had sent them; a page sent with its own words keeps them."""
    require_ocr()
    page = render_page()
    words = ocr.read_words(page)
    text = "what is the total due"
    questions = [question(text, page), question(text, page, words), question(text, page, WORDS)]
    request = multimodal_pb2.AnswerDocumentQuestionRequest(model=TASK, questions=questions, top_k=2)

    async def scenario() -> Run:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            return await serving.concurrently(TASK, document_qa.ADAPTER, [request], items=len(questions))

    result = asyncio.run(scenario())
    want = [expected(text, page), expected(text, page), expected(text, page, WORDS)]
    assert_protos_close(result.responses[0], _merged(want))
    assert result.batches == collections.Counter({2: 1, 1: 1})
    assert result.pipeline_calls == 2


def test_the_requests_ocr_language_reads_its_pages() -> None:
    """`ocr_language` reaches Tesseract: a page read in `osd` (installed with Tesseract; its recognition reads
    other characters than `eng`, the default) has the words `osd` reads, so it batches with a question given
    those words and is answered as in process with them."""
    require_ocr()
    if "osd" not in ocr.installed_languages():
        pytest.skip("Tesseract's osd data is not installed")
    page = render_page()
    words = ocr.read_words(page, "osd")
    assert words != ocr.read_words(page)
    text = "what is the total due"
    request = multimodal_pb2.AnswerDocumentQuestionRequest(
        model=TASK, questions=[question(text, page), question(text, page, words)], top_k=2, ocr_language="osd"
    )

    async def scenario() -> Run:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            return await serving.concurrently(TASK, document_qa.ADAPTER, [request], items=2)

    result = asyncio.run(scenario())
    assert_protos_close(result.responses[0], _merged([expected(text, page, words)] * 2))
    assert result.batches == collections.Counter({2: 1})


def _merged(responses: list[Any]) -> Any:
    return multimodal_pb2.AnswerDocumentQuestionResponse(
        results=[r.results[0] for r in responses], model=TASK
    )


def test_ocr_stops_at_the_requests_budget() -> None:
    """Less budget left than a page's OCR takes (a letter-size page of 40 lines: ~10 s of Tesseract on a
    2-core machine): the page's OCR is cut at the budget. The budget also pays for decoding the PNG before
    the OCR starts (~0.06 s, more on a loaded machine): 1.5 s, so OCR surely starts with budget left."""
    require_ocr()
    lines = [f"line {i} of a long invoice with many words to read" for i in range(40)]
    page = question("what is the total due", render_page(lines, size=(1700, 3300)))
    with pytest.raises(InvalidInput, match="^OCR of the page was stopped"):
        document_qa._load(page, ImageLimits(), "", time.monotonic() + 1.5)


def test_a_page_whose_ocr_budget_is_spent_exactly_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """The request's OCR budget ends at `ocr_deadline`: with the clock exactly there, no time is left, and the
    page is refused before Tesseract starts (Tesseract reads a timeout of 0 as no limit at all)."""

    class Clock:
        @staticmethod
        def monotonic() -> float:
            return 500.0

    monkeypatch.setattr(document_qa, "time", Clock)
    page = question("what is the total due", render_page())
    with pytest.raises(InvalidInput, match=r"^the request's pages took more than \d+ s of OCR$"):
        document_qa._load(page, ImageLimits(), "", 500.0)


def test_questions_without_text_or_page_are_refused() -> None:
    refused = [
        (question("  ", words=WORDS), "^the question is empty$"),
        (question("what is the total"), "^a document question needs the page image or its word_boxes$"),
    ]

    async def scenario() -> None:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            for q, message in refused:
                request = multimodal_pb2.AnswerDocumentQuestionRequest(model=TASK, questions=[q])
                with pytest.raises(InvalidInput, match=message):
                    await serving.call(document_qa.ADAPTER, request)

    asyncio.run(scenario())
