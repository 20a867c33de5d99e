"""zero-shot-classification: ClassifyZeroShotRequest -> pipeline arguments, scores -> response.

Batching rule: inputs of any length share a batch. Each input becomes one (premise, hypothesis) pair
per label and the pipeline batches pairs; right padding with an attention mask leaves scores equal to
unbatched ones to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.v1 import text_pb2

from ..config import InputLimits, ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_labels, check_template, check_text, text_items

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


class ZeroShotClassification(Adapter[text_pb2.ClassifyZeroShotRequest, text_pb2.ClassifyZeroShotResponse]):
    task = TASK
    decodes = False  # items only check string lengths

    def arguments(
        self, request: text_pb2.ClassifyZeroShotRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request, config.limits)

    def items(
        self,
        request: text_pb2.ClassifyZeroShotRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        return text_items(request.inputs, config.limits)

    def response(
        self,
        request: text_pb2.ClassifyZeroShotRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.ClassifyZeroShotResponse:
        return text_pb2.ClassifyZeroShotResponse(
            results=[
                text_pb2.ZeroShotClassification(
                    sequence=o["sequence"], labels=o["labels"], scores=o["scores"]
                )
                for o in outputs
            ],
            model=instance.name,
        )


ADAPTER = ZeroShotClassification()
