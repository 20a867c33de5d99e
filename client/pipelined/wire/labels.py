"""Label arguments and label scores: `function_to_apply` for image and audio classifiers, candidate
labels, and ClassScores -> the pipelines' score dicts."""

from __future__ import annotations

from typing import Any

from ..v1 import common_pb2

LOGIT_FUNCTIONS: dict[Any, common_pb2.ScoreFunction.ValueType] = {
    None: common_pb2.SCORE_FUNCTION_UNSPECIFIED,
    "softmax": common_pb2.SCORE_FUNCTION_SOFTMAX,
    "sigmoid": common_pb2.SCORE_FUNCTION_SIGMOID,
    "none": common_pb2.SCORE_FUNCTION_NONE,
}


def logit_function(value: Any) -> common_pb2.ScoreFunction.ValueType:
    if value not in LOGIT_FUNCTIONS:
        raise ValueError(f"function_to_apply must be 'softmax', 'sigmoid' or 'none', got {value!r}")
    return LOGIT_FUNCTIONS[value]


def label_scores(scores: common_pb2.LabelScores, score_first: bool) -> list[dict[str, Any]]:
    if score_first:
        return [{"score": s.score, "label": s.label} for s in scores.scores]
    return [{"label": s.label, "score": s.score} for s in scores.scores]


def parse_labels(labels: Any) -> list[str]:
    """As the text zero-shot pipeline does: a comma-separated string or a list."""
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return [str(label) for label in labels]
