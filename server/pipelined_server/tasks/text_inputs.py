"""Checks every text request shares: input counts and lengths against the configured InputLimits, and
running a request's inputs through the model's scheduler as separate items (so they batch with other
requests' inputs) while keeping their order."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from ..batching import gather_or_cancel
from ..config import InputLimits
from ..errors import InvalidInput
from ..registry import ModelInstance


def check_count(count: int, limits: InputLimits) -> None:
    if count == 0:
        raise InvalidInput("inputs is empty: send at least one input")
    if count > limits.max_inputs_per_request:
        raise InvalidInput(
            f"{count} inputs in one request; the server accepts at most {limits.max_inputs_per_request} "
            "(limits.max_inputs_per_request): split the batch into several requests"
        )


def check_text(text: str, limits: InputLimits, where: str) -> None:
    if len(text) > limits.max_text_chars:
        raise InvalidInput(
            f"{where} has {len(text)} characters; the server accepts at most {limits.max_text_chars} "
            "per input (limits.max_text_chars)"
        )


def check_texts(texts: Sequence[str], limits: InputLimits) -> None:
    check_count(len(texts), limits)
    for index, text in enumerate(texts):
        check_text(text, limits, f"inputs[{index}]")


def positive(value: int | float, name: str, *, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise InvalidInput(f"{name} must be {bound}, got {value}")


async def run_all(
    instance: ModelInstance,
    payloads: Sequence[Any],
    kwargs: dict[str, Any],
    timeout: float | None,
    keys: Sequence[Hashable] | None = None,
    batchable: bool = True,
) -> list[Any]:
    """One scheduler item per input; results in input order. The first failure cancels the rest."""
    assert instance.scheduler is not None
    scheduler = instance.scheduler
    scheduler.ensure_room(len(payloads))
    return await gather_or_cancel(
        scheduler.submit(
            p, kwargs, key=None if keys is None else keys[i], batchable=batchable, timeout=timeout
        )
        for i, p in enumerate(payloads)
    )
