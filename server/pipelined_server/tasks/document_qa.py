"""document-question-answering: questions (image and/or word boxes) -> pipeline inputs, answers -> protos.

The server runs no OCR: a question needs word boxes unless the model reads the page's pixels itself
(Donut-style). Batching rule: the pipeline pads a batch to its longest token sequence, so only identical
questions over identical words share a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.v1 import multimodal_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..images import ImageLimits
from ..registry import ModelInstance
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


def _load(question: multimodal_pb2.DocumentQuestion, limits: ImageLimits) -> Item:
    if not question.question.strip():
        raise InvalidInput("the question is empty")
    payload: dict[str, Any] = {"question": question.question, "image": None}
    if question.HasField("image"):
        payload["image"] = load_image_input(question.image, limits)
    elif not question.word_boxes:
        raise InvalidInput(
            "a document question needs the page image or its word_boxes (the server runs no OCR)"
        )
    words = [(w.word, [w.x0, w.y0, w.x1, w.y1]) for w in question.word_boxes]
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
        return [_load(q, config.images) for q in request.questions]

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
