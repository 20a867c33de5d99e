"""text-classification: ClassifyTextRequest -> pipeline arguments, outputs -> ClassifyTextResponse.

Batching rule: inputs of any length share a batch. BERT-like classifiers pad on the right with an
attention mask, so padded positions change no real position's output beyond float32 rounding of the
different matrix shapes (scores equal to ~1e-6; tests compare batched and unbatched results).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.v1 import common_pb2, text_pb2

from ..config import ServerConfig
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_count, check_text
from .options import classification_kwargs, score_function

TASK = "text-classification"


def call_kwargs(request: text_pb2.ClassifyTextRequest) -> dict[str, Any]:
    if request.all_labels:
        return {"top_k": None, **score_function(request)}
    return classification_kwargs(request)


def _labels(output: Any) -> text_pb2.TextClassification:
    scores = output if isinstance(output, list) else [output]
    return text_pb2.TextClassification(
        labels=[common_pb2.LabelScore(label=s["label"], score=s["score"]) for s in scores]
    )


class TextClassification(Adapter[text_pb2.ClassifyTextRequest, text_pb2.ClassifyTextResponse]):
    task = TASK
    decodes = False  # items only check string lengths

    def arguments(
        self, request: text_pb2.ClassifyTextRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request)

    def items(
        self,
        request: text_pb2.ClassifyTextRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        limits = config.limits
        check_count(len(request.inputs), "inputs", limits)
        items = []
        for i, item in enumerate(request.inputs):
            check_text(item.text, limits, f"inputs[{i}].text")
            if item.HasField("text_pair"):
                check_text(item.text_pair, limits, f"inputs[{i}].text_pair")
                items.append(Item({"text": item.text, "text_pair": item.text_pair}))
            else:
                items.append(Item(item.text))
        return items

    def response(
        self,
        request: text_pb2.ClassifyTextRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.ClassifyTextResponse:
        return text_pb2.ClassifyTextResponse(results=[_labels(o) for o in outputs], model=instance.name)


ADAPTER = TextClassification()
