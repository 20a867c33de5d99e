"""text-classification: ClassifyTextRequest -> pipeline arguments, outputs -> ClassifyTextResponse.

Batching rule: inputs of any length share a batch. BERT-like classifiers pad on the right with an
attention mask, so padded positions change no real position's output beyond float32 rounding of the
different matrix shapes (scores equal to ~1e-6; tests compare batched and unbatched results).
"""

from __future__ import annotations

from typing import Any

from pipelined.v1 import common_pb2, text_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from ..registry import ModelInstance
from .text_inputs import check_count, check_text, run_all

TASK = "text-classification"
_FUNCTIONS = {
    common_pb2.SCORE_FUNCTION_SIGMOID: "sigmoid",
    common_pb2.SCORE_FUNCTION_SOFTMAX: "softmax",
    common_pb2.SCORE_FUNCTION_NONE: "none",
}


def call_kwargs(request: text_pb2.ClassifyTextRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.all_labels:
        kwargs["top_k"] = None
    elif request.HasField("top_k"):
        if request.top_k < 1:
            raise InvalidInput(f"top_k must be >= 1, got {request.top_k}")
        kwargs["top_k"] = request.top_k
    if request.function_to_apply:
        if request.function_to_apply not in _FUNCTIONS:
            raise InvalidInput(f"unknown function_to_apply value {request.function_to_apply}")
        kwargs["function_to_apply"] = _FUNCTIONS[request.function_to_apply]
    return kwargs


def payloads(request: text_pb2.ClassifyTextRequest, limits: InputLimits) -> list[Any]:
    check_count(len(request.inputs), limits)
    out: list[Any] = []
    for i, item in enumerate(request.inputs):
        check_text(item.text, limits, f"inputs[{i}].text")
        if item.HasField("text_pair"):
            check_text(item.text_pair, limits, f"inputs[{i}].text_pair")
            out.append({"text": item.text, "text_pair": item.text_pair})
        else:
            out.append(item.text)
    return out


def _labels(output: Any) -> text_pb2.TextClassification:
    scores = output if isinstance(output, list) else [output]
    return text_pb2.TextClassification(
        labels=[common_pb2.LabelScore(label=s["label"], score=s["score"]) for s in scores]
    )


async def classify(
    instance: ModelInstance, request: text_pb2.ClassifyTextRequest, limits: InputLimits, timeout: float | None
) -> text_pb2.ClassifyTextResponse:
    inputs = payloads(request, limits)
    outputs = await run_all(instance, inputs, call_kwargs(request), timeout)
    return text_pb2.ClassifyTextResponse(results=[_labels(o) for o in outputs], model=instance.name)
