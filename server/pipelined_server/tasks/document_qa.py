"""document-question-answering: questions (image and/or word boxes) -> pipeline inputs, answers -> protos.

A page without word boxes, for a model that reads words (LayoutLM), is read by OCR here while the
question's items are made (tasks/ocr.py; the items step runs off the event loop, before anything is queued),
not in the pipeline's preprocess as locally: there it would run on the model's worker thread and every
question queued behind it would wait (measured on the loaded 2-core dev machine: Tesseract 1.4-1.8 s for a
640x320 rendered page, 2.8 s for a letter-size page at 200 dpi, against milliseconds for a LayoutLM
forward). The words are then the pipeline's `word_boxes`, exactly what its own OCR would give. A request's
pages share one OCR budget (`ocr.OCR_TIMEOUT_S`). Models that read pixels (Donut) or whose image processor
runs OCR itself (LayoutLMv2/v3 with `apply_ocr`) get the image alone. Batching rule: the pipeline pads a
batch to its longest token sequence, so only identical questions over identical words share a batch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pipelined.v1 import multimodal_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..images import ImageLimits
from ..registry import ModelInstance
from . import ocr
from .adapter import Adapter, Item
from .checks import check_count, positive
from .image_input import load_image_input

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
            raise InvalidInput(f"the request's pages took more than {ocr.OCR_TIMEOUT_S:.0f} s of OCR")
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


class DocumentQuestionAnswering(
    Adapter[multimodal_pb2.AnswerDocumentQuestionRequest, multimodal_pb2.AnswerDocumentQuestionResponse]
):
    task = TASK

    def arguments(
        self,
        request: multimodal_pb2.AnswerDocumentQuestionRequest,
        instance: ModelInstance,
        config: ServerConfig,
    ) -> dict[str, Any]:
        return call_kwargs(request)

    def items(
        self,
        request: multimodal_pb2.AnswerDocumentQuestionRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        check_count(len(request.questions), "questions", config.limits)
        deadline = None
        if reads_words(instance) and any(not q.word_boxes for q in request.questions):
            ocr.check_language(request.ocr_language)  # before any page is decoded or read
            deadline = time.monotonic() + ocr.OCR_TIMEOUT_S
        return [_load(q, config.images, request.ocr_language, deadline) for q in request.questions]

    def response(
        self,
        request: multimodal_pb2.AnswerDocumentQuestionRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> multimodal_pb2.AnswerDocumentQuestionResponse:
        return multimodal_pb2.AnswerDocumentQuestionResponse(
            results=[answers(o) for o in outputs], model=instance.name
        )


ADAPTER = DocumentQuestionAnswering()
