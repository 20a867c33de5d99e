"""fill-mask: FillMaskRequest -> pipeline arguments, candidates -> FillMaskResponse.

Batching rule: inputs of any length share a batch. The pipeline reads logits at the mask positions
only and drops pad tokens from the sequences it decodes; real positions see an attention mask, so
scores match unbatched ones to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.v1 import text_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import positive, text_items

TASK = "fill-mask"


def call_kwargs(request: text_pb2.FillMaskRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.HasField("top_k"):
        kwargs["top_k"] = positive("top_k", request.top_k)
    if request.targets:
        kwargs["targets"] = list(request.targets)
    return kwargs


def _masks(output: list[Any]) -> text_pb2.FillMaskResult:
    # One mask gives a list of candidates; several give a list per mask.
    per_mask = output if output and isinstance(output[0], list) else [output]
    return text_pb2.FillMaskResult(
        masks=[
            text_pb2.MaskCandidates(
                candidates=[
                    text_pb2.FillMaskCandidate(
                        score=c["score"],
                        token=int(c["token"]),
                        token_str=c["token_str"],
                        sequence=c["sequence"],
                    )
                    for c in candidates
                ]
            )
            for candidates in per_mask
        ]
    )


class FillMask(Adapter[text_pb2.FillMaskRequest, text_pb2.FillMaskResponse]):
    task = TASK
    decodes = False  # items only check string lengths

    def arguments(
        self, request: text_pb2.FillMaskRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request)

    def items(
        self,
        request: text_pb2.FillMaskRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        items = text_items(request.inputs, config.limits)
        mask = getattr(instance.pipeline.tokenizer, "mask_token", None)
        for i, text in enumerate(request.inputs):
            if mask and mask not in text:
                raise InvalidInput(f"inputs[{i}] holds no mask token; this model's mask token is {mask!r}")
        return items

    def response(
        self,
        request: text_pb2.FillMaskRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.FillMaskResponse:
        return text_pb2.FillMaskResponse(results=[_masks(o) for o in outputs], model=instance.name)


ADAPTER = FillMask()
