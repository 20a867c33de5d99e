"""The shared `DecodingOptions` (common.proto) -> validated `generate` kwargs, for every generating task."""

from __future__ import annotations

from typing import Any

from pipelined.v1 import common_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from .checks import check_generation


def decoding_kwargs(
    options: common_pb2.DecodingOptions, limits: InputLimits, prefix: str = ""
) -> dict[str, Any]:
    """The fields the caller set (all are `optional`), under their generate() names, range-checked and
    within the server's `limits` (max_new_tokens, num_beams)."""
    kwargs: dict[str, Any] = {field.name: value for field, value in options.ListFields()}
    for name in ("max_new_tokens", "num_beams"):
        if name in kwargs and kwargs[name] < 1:
            raise InvalidInput(f"{prefix}{name} must be >= 1, got {kwargs[name]}")
    for name in ("temperature", "repetition_penalty"):
        if name in kwargs and kwargs[name] <= 0:
            raise InvalidInput(f"{prefix}{name} must be > 0, got {kwargs[name]}")
    if "top_k" in kwargs and kwargs["top_k"] < 0:
        raise InvalidInput(f"{prefix}top_k must be >= 0, got {kwargs['top_k']}")
    if "top_p" in kwargs and not 0 < kwargs["top_p"] <= 1:
        raise InvalidInput(f"{prefix}top_p must be in (0, 1], got {kwargs['top_p']}")
    check_generation(kwargs, limits, prefix)
    return kwargs
