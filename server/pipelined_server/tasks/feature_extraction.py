"""feature-extraction: ExtractFeaturesRequest -> token embeddings from the pipeline -> pooled, packed float32.

The pipeline returns the last hidden state of every position of the (padded) batch. The adapter knows
each input's token count (it tokenizes the input the way the pipeline does), so it cuts the padded rows
off: the tokens an input returns never depend on what it was batched with.

Batching rule: inputs of any length share a batch. BERT-like encoders pad on the right with an
attention mask, so real positions match unbatched ones to float32 rounding (tests compare batched and
unbatched results).

Pooling and normalisation happen here, after the pipeline, so sentence embeddings come out ready to use:
mean pooling averages the input's real tokens (sentence-transformers' mean pooling), CLS takes the
first token, normalisation scales to unit L2 norm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pipelined.v1 import text_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_texts
from .encoding import float32_array

TASK = "feature-extraction"
_POOLINGS = {
    text_pb2.POOLING_NONE: "none",
    text_pb2.POOLING_MEAN: "mean",
    text_pb2.POOLING_CLS: "cls",
}
POOLING_PROTO = {name: value for value, name in _POOLINGS.items()}


def pooling_of(request: text_pb2.ExtractFeaturesRequest, defaults: dict[str, Any]) -> tuple[str, bool]:
    """The pooling and normalisation a request gets: its own, else the model's request defaults."""
    if request.pooling and request.pooling not in _POOLINGS:
        raise InvalidInput(f"unknown pooling value {request.pooling}")
    pooling = _POOLINGS[request.pooling] if request.pooling else str(defaults.get("pooling", "none"))
    if request.HasField("normalize"):
        normalize = request.normalize
    else:
        normalize = bool(defaults.get("normalize", False)) and pooling != "none"
    if normalize and pooling == "none":
        raise InvalidInput(
            "normalize needs pooling (POOLING_MEAN or POOLING_CLS): token embeddings are not normalised"
        )
    return pooling, normalize


def _token_count(instance: ModelInstance, text: str, truncation: bool) -> int:
    tokenizer = instance.tokenizer
    count = len(tokenizer(text, truncation=truncation)["input_ids"])
    # Always an int: a tokenizer without a limit has transformers' sentinel of 1e30 tokens, which no input exceeds.
    limit = tokenizer.model_max_length
    if not truncation and count > limit:
        raise InvalidInput(
            f"an input has {count} tokens, more than this model's {limit}; shorten it or set truncation"
        )
    return count


def pool(hidden: np.ndarray, pooling: str, normalize: bool) -> np.ndarray:
    """hidden: [1, tokens, dim] float32 -> [1, tokens, dim] (none) or [dim]."""
    if pooling == "none":
        return hidden
    vector = hidden[0, 0] if pooling == "cls" else hidden[0].mean(axis=0, dtype=np.float32)
    if normalize:
        norm = np.linalg.norm(vector)
        vector = vector / max(float(norm), 1e-12)
    return np.ascontiguousarray(vector, dtype=np.float32)


class FeatureExtraction(Adapter[text_pb2.ExtractFeaturesRequest, text_pb2.ExtractFeaturesResponse]):
    task = TASK

    def arguments(
        self, request: text_pb2.ExtractFeaturesRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        pooling_of(request, instance.spec.request_defaults)  # refused before any work
        kwargs: dict[str, Any] = {"return_tensors": True}
        if request.HasField("truncation"):
            kwargs["truncation"] = request.truncation
        return kwargs

    def items(
        self,
        request: text_pb2.ExtractFeaturesRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        check_texts(request.inputs, config.limits)
        truncation = bool(kwargs.get("truncation"))
        return [Item(text, note=_token_count(instance, text, truncation)) for text in request.inputs]

    def response(
        self,
        request: text_pb2.ExtractFeaturesRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.ExtractFeaturesResponse:
        pooling, normalize = pooling_of(request, instance.spec.request_defaults)
        embeddings = []
        for output, item in zip(outputs, items, strict=True):
            hidden = output.detach().float().cpu().numpy()[:, : item.note]
            embeddings.append(float32_array(pool(hidden, pooling, normalize)))
        return text_pb2.ExtractFeaturesResponse(
            embeddings=embeddings, pooling=POOLING_PROTO[pooling], normalized=normalize, model=instance.name
        )


ADAPTER = FeatureExtraction()
