"""zero-shot-classification: ClassifyZeroShotRequest -> pipeline arguments, scores -> response.

Batching rule: inputs of any length share a batch. Each input becomes one (premise, hypothesis) pair
per label and the pipeline batches pairs; right padding with an attention mask leaves scores equal to
unbatched ones to float32 rounding.
"""

from __future__ import annotations

from typing import Any

from pipelined.v1 import text_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from ..registry import ModelInstance
from .request_limits import check_labels, check_template
from .text_inputs import check_text, check_texts, run_all

TASK = "zero-shot-classification"


def call_kwargs(request: text_pb2.ClassifyZeroShotRequest, limits: InputLimits) -> dict[str, Any]:
    labels = [label for label in request.candidate_labels if label.strip()]
    if not labels:
        raise InvalidInput("candidate_labels is empty: give at least one label")
    check_labels(labels, limits)
    for i, label in enumerate(labels):
        check_text(label, limits, f"candidate_labels[{i}]")
    kwargs: dict[str, Any] = {"candidate_labels": labels, "multi_label": request.multi_label}
    if request.hypothesis_template:
        check_template(request.hypothesis_template)
        check_text(request.hypothesis_template, limits, "hypothesis_template")
        kwargs["hypothesis_template"] = request.hypothesis_template
    return kwargs


async def classify(
    instance: ModelInstance,
    request: text_pb2.ClassifyZeroShotRequest,
    limits: InputLimits,
    timeout: float | None,
) -> text_pb2.ClassifyZeroShotResponse:
    check_texts(request.inputs, limits)
    kwargs = call_kwargs(request, limits)
    outputs = await run_all(instance, list(request.inputs), kwargs, timeout)
    return text_pb2.ClassifyZeroShotResponse(
        results=[
            text_pb2.ZeroShotClassification(sequence=o["sequence"], labels=o["labels"], scores=o["scores"])
            for o in outputs
        ],
        model=instance.name,
    )
