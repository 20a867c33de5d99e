"""document-question-answering: questions (image and/or word boxes) -> pipeline inputs, answers -> protos.

A page without word boxes, for a model that reads words (LayoutLM), is read by OCR here while the
question is loaded (tasks/ocr.py, off the event loop, before the question is queued), not in the pipeline's
preprocess as locally: there it would run on the model's worker thread and every question queued behind it
would wait (measured on the loaded 2-core dev machine: Tesseract 1.4-1.8 s for a 640x320 rendered page,
2.8 s for a letter-size page at 200 dpi, against milliseconds for a LayoutLM forward). The words are then
the pipeline's `word_boxes`, exactly what its own OCR would give. Each page gets at most what is left of
the caller's deadline (and `ocr.OCR_TIMEOUT_S`). Models that read pixels (Donut) or whose image processor runs OCR itself (LayoutLMv2/v3 with `apply_ocr`)
get the image alone. Batching rule: the pipeline pads a batch to its longest token sequence, so only
identical questions over identical words share a batch.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pipelined.v1 import multimodal_pb2

from ..config import InputLimits
from ..errors import DeadlineExpired, InvalidInput
from ..images import ImageLimits
from ..registry import ModelInstance
from . import ocr
from .image_input import check_count, load_image_input
from .options import positive
from .submit import Item

TASK = "document-question-answering"


def call_kwargs(request: multimodal_pb2.AnswerDocumentQuestionRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.HasField("top_k"):
        kwargs["top_k"] = positive("top_k", request.top_k)
    if request.HasField("max_answer_len"):
        kwargs["max_answer_len"] = positive("max_answer_len", request.max_answer_len)
    if request.handle_impossible_answer:
        kwargs["handle_impossible_answer"] = True
    return kwargs


def reads_words(instance: ModelInstance) -> bool:
    """Whether the model needs words and boxes that nothing but OCR here would give it."""
    pipe = instance.pipeline
    if getattr(getattr(pipe, "model_type", None), "value", None) == "vision_encoder_decoder":  # Donut: pixels
        return False
    return not getattr(getattr(pipe, "image_processor", None), "apply_ocr", False)


def _load(
    question: multimodal_pb2.DocumentQuestion,
    limits: ImageLimits,
    ocr_language: str,
    ocr_deadline: float | None,
) -> Item:
    """`ocr_deadline`: the monotonic time by which a page without word boxes must be read; None: no OCR."""
    if not question.question.strip():
        raise InvalidInput("the question is empty")
    payload: dict[str, Any] = {"question": question.question, "image": None}
    if question.HasField("image"):
        payload["image"] = load_image_input(question.image, limits)
    elif not question.word_boxes:
        raise InvalidInput("a document question needs the page image or its word_boxes")
    words = [(w.word, [w.x0, w.y0, w.x1, w.y1]) for w in question.word_boxes]
    if not words and ocr_deadline is not None:
        left = ocr_deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExpired("the deadline passed while the document's pages were read by OCR")
        words = ocr.read_words(payload["image"], ocr_language, timeout_s=left)
    if words:
        payload["word_boxes"] = words
    key = (
        "document",
        question.question,
        tuple((w, tuple(b)) for w, b in words),
        getattr(payload["image"], "size", None),
    )
    return Item(payload, key=key)


async def load_questions(
    request: multimodal_pb2.AnswerDocumentQuestionRequest,
    limits: ImageLimits,
    inputs: InputLimits,
    instance: ModelInstance,
    timeout: float | None,
) -> list[Item]:
    """The questions as work items, pages without word boxes read by OCR within `timeout` (the caller's)."""
    check_count(len(request.questions), "questions", inputs)
    with_ocr = reads_words(instance) and any(not q.word_boxes for q in request.questions)
    budget = ocr.OCR_TIMEOUT_S if timeout is None else min(timeout, ocr.OCR_TIMEOUT_S)
    deadline = time.monotonic() + budget if with_ocr else None

    def load() -> list[Item]:
        if with_ocr:
            ocr.check_language(request.ocr_language)  # before any page is decoded or read
        return [_load(q, limits, request.ocr_language, deadline) for q in request.questions]

    return await asyncio.to_thread(load)


def answers(output: Any) -> multimodal_pb2.DocumentAnswers:
    records = output if isinstance(output, list) else [output]
    return multimodal_pb2.DocumentAnswers(
        answers=[
            multimodal_pb2.DocumentAnswer(
                score=float(a["score"]), answer=str(a["answer"]), start=int(a["start"]), end=int(a["end"])
            )
            for a in records
        ]
    )
