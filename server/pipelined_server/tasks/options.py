"""Options several tasks share: top_k, function_to_apply, candidate labels and their template."""

from __future__ import annotations

from typing import Any

from ..config import InputLimits
from ..errors import InvalidInput
from .checks import check_labels, check_template, positive
from .encoding import LOGIT_FUNCTIONS


def candidate_labels(candidate_labels: Any) -> list[str]:
    labels = [str(label) for label in candidate_labels]
    if not labels:
        raise InvalidInput("candidate_labels must hold at least one label")
    return labels


def classification_kwargs(request: Any) -> dict[str, Any]:
    """top_k and function_to_apply (text-, image- and audio-classification share them)."""
    kwargs: dict[str, Any] = {}
    if request.HasField("top_k"):
        kwargs["top_k"] = positive("top_k", request.top_k)
    return {**kwargs, **score_function(request)}


def score_function(request: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.function_to_apply:
        if request.function_to_apply not in LOGIT_FUNCTIONS:
            raise InvalidInput(f"unknown function_to_apply value {request.function_to_apply}")
        kwargs["function_to_apply"] = LOGIT_FUNCTIONS[request.function_to_apply]
    return kwargs


def zero_shot_classification_kwargs(request: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"candidate_labels": candidate_labels(request.candidate_labels)}
    if request.hypothesis_template:
        check_template(request.hypothesis_template)
        kwargs["hypothesis_template"] = request.hypothesis_template
    return kwargs


def bounded_labels(kwargs: dict[str, Any], limits: InputLimits) -> dict[str, Any]:
    """Options of a zero-shot task with their labels counted against `limits.max_candidate_labels`."""
    if "candidate_labels" in kwargs:
        check_labels(kwargs["candidate_labels"], limits)
    return kwargs
