"""token-classification: ClassifyTokensRequest -> pipeline arguments, entities -> ClassifyTokensResponse.

Batching rule: inputs of any length share a batch. Padded positions are marked special (the
pipeline's collate pads `special_tokens_mask` with 1) and skipped; real tokens see an attention
mask, so scores match unbatched ones to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipelined.v1 import text_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import text_items

TASK = "token-classification"
_STRATEGIES = {
    text_pb2.AGGREGATION_STRATEGY_NONE: "none",
    text_pb2.AGGREGATION_STRATEGY_SIMPLE: "simple",
    text_pb2.AGGREGATION_STRATEGY_FIRST: "first",
    text_pb2.AGGREGATION_STRATEGY_MAX: "max",
    text_pb2.AGGREGATION_STRATEGY_AVERAGE: "average",
}


def call_kwargs(request: text_pb2.ClassifyTokensRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.aggregation_strategy:
        if request.aggregation_strategy not in _STRATEGIES:
            raise InvalidInput(f"unknown aggregation_strategy value {request.aggregation_strategy}")
        kwargs["aggregation_strategy"] = _STRATEGIES[request.aggregation_strategy]
    if request.HasField("ignore_labels"):
        kwargs["ignore_labels"] = list(request.ignore_labels.labels)
    return kwargs


def _entity(entity: dict[str, Any]) -> text_pb2.TokenEntity:
    proto = text_pb2.TokenEntity(
        label=entity.get("entity_group", entity.get("entity", "")),
        score=float(entity["score"]),
        word=entity.get("word", ""),
    )
    if entity.get("index") is not None and "entity" in entity:
        proto.index = int(entity["index"])
    if entity.get("start") is not None:
        proto.start = int(entity["start"])
    if entity.get("end") is not None:
        proto.end = int(entity["end"])
    return proto


class TokenClassification(Adapter[text_pb2.ClassifyTokensRequest, text_pb2.ClassifyTokensResponse]):
    task = TASK
    decodes = False  # items only check string lengths

    def arguments(
        self, request: text_pb2.ClassifyTokensRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request)

    def items(
        self,
        request: text_pb2.ClassifyTokensRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        return text_items(request.inputs, config.limits)

    def response(
        self,
        request: text_pb2.ClassifyTokensRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.ClassifyTokensResponse:
        return text_pb2.ClassifyTokensResponse(
            results=[text_pb2.TokenClassification(entities=[_entity(e) for e in o]) for o in outputs],
            model=instance.name,
        )


ADAPTER = TokenClassification()
