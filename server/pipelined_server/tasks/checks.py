"""Checks every adapter shares, in one place: how many inputs a request carries, how long a text is,
and counts that must be at least one. Each raises InvalidInput naming the request field, the limit, and
the config key that sets it, so a caller knows what to change. The bounds on the work a request asks for
(generation lengths and beams, batch sizes, labels, templates, chunking) are shared by the typed adapters and
the generic call, so that `num_beams: 1000` is refused the same way on every path."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

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


# generate() arguments that multiply the work of one input, with the limit that bounds each.
_GENERATION_BOUNDS = {
    "max_new_tokens": "max_new_tokens",
    "num_beams": "max_num_beams",
    "num_return_sequences": "max_num_return_sequences",
}


def bounded_int(value: Any, name: str, maximum: int, where: str, minimum: int = 1) -> int:
    """`value` as an int in [minimum, maximum]; the limit's config key is named in the message."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise InvalidInput(f"{where} must be an integer, got {value!r}")
    number = int(value)
    if number < minimum:
        raise InvalidInput(f"{where} must be >= {minimum}, got {number}")
    if number > maximum:
        raise InvalidInput(f"{where} is {number}; this server allows at most {maximum} (limits.{name})")
    return number


def check_generation(kwargs: Mapping[str, Any], limits: InputLimits, prefix: str = "") -> None:
    """max_new_tokens, num_beams and num_return_sequences within the limits (when set)."""
    for key, limit in _GENERATION_BOUNDS.items():
        if key in kwargs:
            bounded_int(kwargs[key], limit, getattr(limits, limit), f"{prefix}{key}")
    beams, sequences = kwargs.get("num_beams"), kwargs.get("num_return_sequences")
    if isinstance(beams, int) and isinstance(sequences, int) and sequences > beams > 1:
        raise InvalidInput(f"{prefix}num_return_sequences ({sequences}) must be <= num_beams ({beams})")


def check_batch_size(value: Any, limits: InputLimits, where: str = "batch_size") -> int:
    return bounded_int(value, "max_batch_size", limits.max_batch_size, where)


def check_labels(labels: Sequence[Any], limits: InputLimits, where: str = "candidate_labels") -> None:
    if len(labels) > limits.max_candidate_labels:
        raise InvalidInput(
            f"{where} has {len(labels)} labels; this server allows at most {limits.max_candidate_labels} "
            "(limits.max_candidate_labels)"
        )


def check_template(template: Any, where: str = "hypothesis_template") -> None:
    """Exactly one `{}` where the label goes, and no other brace: the pipeline calls str.format on it, and
    `{:>100000000}` (or `{0}`, `{x.y}`, `{{`) would make format pad, index or look up attributes.
    Measured (issue 10): "{{}}{:>100000000}" ran 70.8 s and took +5.5 GiB."""
    if not isinstance(template, str):
        raise InvalidInput(f"{where} must be a string")
    if template.count("{") != 1 or template.count("}") != 1 or "{}" not in template:
        raise InvalidInput(
            f"{where} {template[:80]!r} must contain exactly one '{{}}' (where the label goes) and no other brace"
        )


def check_chunking(chunk_s: Any, stride_s: Any, limits: InputLimits, prefix: str = "") -> None:
    """Chunked ASR: each chunk is one forward pass, so the chunk and the new audio it brings are bounded
    below. `stride_s` may be None (the pipeline's default, chunk / 6), a number or a (left, right) pair."""
    chunk = _seconds(chunk_s, f"{prefix}chunk_length_s")
    if chunk < limits.min_chunk_length_s:
        raise InvalidInput(
            f"{prefix}chunk_length is {chunk:g} s; this server needs at least {limits.min_chunk_length_s:g} s "
            "(limits.min_chunk_length_s)"
        )
    if stride_s is None:
        return
    if isinstance(stride_s, list | tuple):
        if len(stride_s) != 2:
            raise InvalidInput(f"{prefix}stride_length_s must be a number or a pair (left, right)")
        left, right = (_seconds(s, f"{prefix}stride_length_s") for s in stride_s)
    else:
        left = right = _seconds(stride_s, f"{prefix}stride_length_s")
    step = chunk - left - right
    if step < limits.min_chunk_step_s:
        raise InvalidInput(
            f"{prefix}chunk_length ({chunk:g} s) minus both strides ({left:g} s + {right:g} s) leaves "
            f"{step:g} s of new audio per chunk; this server needs at least {limits.min_chunk_step_s:g} s "
            "(limits.min_chunk_step_s)"
        )


def _seconds(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{where} must be a non-negative number of seconds, got {value!r}")
    return float(value)
