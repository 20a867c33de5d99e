"""fill-mask: FillMaskRequest -> pipeline arguments, candidates -> FillMaskResponse.

Batching rule: inputs of any length share a batch. The pipeline reads logits at the mask positions
only and drops pad tokens from the sequences it decodes; real positions see an attention mask, so
scores match unbatched ones to float32 rounding.
"""

from __future__ import annotations

from typing import Any

from pipelined.v1 import text_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from ..registry import ModelInstance
from .text_inputs import check_texts, run_all

TASK = "fill-mask"


def call_kwargs(request: text_pb2.FillMaskRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.HasField("top_k"):
        if request.top_k < 1:
            raise InvalidInput(f"top_k must be >= 1, got {request.top_k}")
        kwargs["top_k"] = request.top_k
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


async def fill(
    instance: ModelInstance, request: text_pb2.FillMaskRequest, limits: InputLimits, timeout: float | None
) -> text_pb2.FillMaskResponse:
    check_texts(request.inputs, limits)
    mask = getattr(instance.pipeline.tokenizer, "mask_token", None)
    for i, text in enumerate(request.inputs):
        if mask and mask not in text:
            raise InvalidInput(f"inputs[{i}] holds no mask token; this model's mask token is {mask!r}")
    outputs = await run_all(instance, list(request.inputs), call_kwargs(request), timeout)
    return text_pb2.FillMaskResponse(results=[_masks(o) for o in outputs], model=instance.name)
