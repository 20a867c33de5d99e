"""Checks every adapter shares, in one place: how many inputs a request carries, how long a text is,
and counts that must be at least one. Each raises InvalidInput naming the request field, the limit, and
the config key that sets it, so a caller knows what to change."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import InputLimits
from ..errors import InvalidInput
from .adapter import Item


def check_count(count: int, field: str, limits: InputLimits) -> None:
    """A request's `field` (inputs, images, audios, prompts, ...) holds 1 to `max_inputs_per_request`."""
    if count == 0:
        raise InvalidInput(f"{field} is empty: send at least one input")
    if count > limits.max_inputs_per_request:
        raise InvalidInput(
            f"{count} {field} in one request; the server accepts at most {limits.max_inputs_per_request} "
            "(limits.max_inputs_per_request): split them into several requests"
        )


def check_text(text: str, limits: InputLimits, where: str) -> None:
    if len(text) > limits.max_text_chars:
        raise InvalidInput(
            f"{where} has {len(text)} characters; the server accepts at most {limits.max_text_chars} "
            "per input (limits.max_text_chars)"
        )


def check_texts(texts: Sequence[str], limits: InputLimits, field: str = "inputs") -> None:
    check_count(len(texts), field, limits)
    for index, text in enumerate(texts):
        check_text(text, limits, f"{field}[{index}]")


def text_items(texts: Sequence[str], limits: InputLimits) -> list[Item]:
    """One item per checked text: the tasks whose inputs are plain strings of any length batch freely."""
    check_texts(texts, limits)
    return [Item(text) for text in texts]


def positive(name: str, value: int) -> int:
    """`value` of a count-like option (top_k, num_return_sequences, ...), refused below 1."""
    if value < 1:
        raise InvalidInput(f"{name} must be >= 1, got {value}")
    return value
