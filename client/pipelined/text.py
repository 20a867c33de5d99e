"""Text tasks: the transformers pipelines' call arguments -> TextService requests, responses -> the
pipelines' output dicts (same keys, same nesting, Python floats for scores)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .v1 import text_pb2

_FUNCTIONS = {
    "sigmoid": text_pb2.SCORE_FUNCTION_SIGMOID,
    "softmax": text_pb2.SCORE_FUNCTION_SOFTMAX,
    "none": text_pb2.SCORE_FUNCTION_NONE,
}
_STRATEGIES = {
    "none": text_pb2.AGGREGATION_STRATEGY_NONE,
    "simple": text_pb2.AGGREGATION_STRATEGY_SIMPLE,
    "first": text_pb2.AGGREGATION_STRATEGY_FIRST,
    "max": text_pb2.AGGREGATION_STRATEGY_MAX,
    "average": text_pb2.AGGREGATION_STRATEGY_AVERAGE,
}
_POOLINGS = {
    None: text_pb2.POOLING_UNSPECIFIED,
    "none": text_pb2.POOLING_NONE,
    "mean": text_pb2.POOLING_MEAN,
    "cls": text_pb2.POOLING_CLS,
}


def check_known(task: str, kwargs: dict[str, Any], known: Sequence[str]) -> None:
    unknown = set(kwargs) - set(known)
    if unknown:
        raise TypeError(f"unsupported {task} argument(s) over gRPC: {', '.join(sorted(unknown))}")


def _enum_name(value: Any) -> str:
    return str(getattr(value, "value", value)).lower()


# ------------------------------------------------------------------------------ text-classification

CLASSIFY_KNOWN = ("top_k", "function_to_apply")


def classify_request(
    model: str, inputs: Sequence[Any], kwargs: dict[str, Any]
) -> text_pb2.ClassifyTextRequest:
    check_known("text-classification", kwargs, CLASSIFY_KNOWN)
    request = text_pb2.ClassifyTextRequest(model=model)
    for item in inputs:
        if isinstance(item, dict):
            if "text" not in item:
                raise ValueError('a text pair is a dict {"text": ..., "text_pair": ...}')
            pair = text_pb2.TextPairInput(text=str(item["text"]))
            if item.get("text_pair") is not None:
                pair.text_pair = str(item["text_pair"])
            request.inputs.append(pair)
        elif isinstance(item, str):
            request.inputs.append(text_pb2.TextPairInput(text=item))
        else:
            raise TypeError(
                f"text-classification inputs are strings or text-pair dicts, got {type(item).__name__}"
            )
    if "top_k" in kwargs:
        if kwargs["top_k"] is None:
            request.all_labels = True
        else:
            request.top_k = int(kwargs["top_k"])
    function = kwargs.get("function_to_apply")
    if function is not None:
        name = _enum_name(function)
        if name not in _FUNCTIONS:
            raise ValueError(f"function_to_apply must be one of {', '.join(_FUNCTIONS)}, got {function!r}")
        request.function_to_apply = _FUNCTIONS[name]
    return request


def classify_results(response: text_pb2.ClassifyTextResponse, kwargs: dict[str, Any]) -> list[Any]:
    """One result per input: the best label's dict by default, a list of dicts when top_k was given."""
    legacy = "top_k" not in kwargs
    results: list[Any] = []
    for result in response.results:
        labels = [{"label": s.label, "score": float(s.score)} for s in result.labels]
        results.append(labels[0] if legacy else labels)
    return results


# ------------------------------------------------------------------------------ token-classification

TOKENS_KNOWN = ("aggregation_strategy", "ignore_labels")


def tokens_request(
    model: str, inputs: Sequence[str], kwargs: dict[str, Any]
) -> text_pb2.ClassifyTokensRequest:
    check_known("token-classification", kwargs, TOKENS_KNOWN)
    request = text_pb2.ClassifyTokensRequest(model=model, inputs=[str(t) for t in inputs])
    strategy = kwargs.get("aggregation_strategy")
    if strategy is not None:
        name = _enum_name(strategy)
        if name not in _STRATEGIES:
            raise ValueError(
                f"aggregation_strategy must be one of {', '.join(_STRATEGIES)}, got {strategy!r}"
            )
        request.aggregation_strategy = _STRATEGIES[name]
    if kwargs.get("ignore_labels") is not None:
        request.ignore_labels.labels.extend(kwargs["ignore_labels"])
        request.ignore_labels.SetInParent()
    return request


def _entity(entity: text_pb2.TokenEntity) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if entity.HasField("index"):  # no aggregation: one entry per token
        out["entity"] = entity.label
        out["score"] = float(entity.score)
        out["index"] = entity.index
    else:
        out["entity_group"] = entity.label
        out["score"] = float(entity.score)
    out["word"] = entity.word
    out["start"] = entity.start if entity.HasField("start") else None
    out["end"] = entity.end if entity.HasField("end") else None
    return out


def tokens_results(response: text_pb2.ClassifyTokensResponse, kwargs: dict[str, Any]) -> list[Any]:
    return [[_entity(e) for e in result.entities] for result in response.results]


# ------------------------------------------------------------------------------ fill-mask

FILL_KNOWN = ("top_k", "targets")


def fill_request(model: str, inputs: Sequence[str], kwargs: dict[str, Any]) -> text_pb2.FillMaskRequest:
    check_known("fill-mask", kwargs, FILL_KNOWN)
    request = text_pb2.FillMaskRequest(model=model, inputs=[str(t) for t in inputs])
    if kwargs.get("top_k") is not None:
        request.top_k = int(kwargs["top_k"])
    targets = kwargs.get("targets")
    if targets is not None:
        request.targets.extend([targets] if isinstance(targets, str) else list(targets))
    return request


def fill_results(response: text_pb2.FillMaskResponse, kwargs: dict[str, Any]) -> list[Any]:
    results: list[Any] = []
    for result in response.results:
        masks = [
            [
                {"score": float(c.score), "token": c.token, "token_str": c.token_str, "sequence": c.sequence}
                for c in mask.candidates
            ]
            for mask in result.masks
        ]
        results.append(masks[0] if len(masks) == 1 else masks)
    return results


# ------------------------------------------------------------------------------ feature-extraction

FEATURES_KNOWN = ("pooling", "normalize", "truncation", "return_tensors", "tokenize_kwargs")


def features_request(
    model: str, inputs: Sequence[str], kwargs: dict[str, Any]
) -> text_pb2.ExtractFeaturesRequest:
    check_known("feature-extraction", kwargs, FEATURES_KNOWN)
    tokenize = dict(kwargs.get("tokenize_kwargs") or {})
    truncation = tokenize.pop("truncation", kwargs.get("truncation"))
    if tokenize:
        raise TypeError(f"unsupported tokenize_kwargs over gRPC: {', '.join(sorted(tokenize))}")
    pooling = kwargs.get("pooling")
    if pooling not in _POOLINGS:
        raise ValueError(f"pooling must be 'none', 'mean' or 'cls', got {pooling!r}")
    request = text_pb2.ExtractFeaturesRequest(
        model=model, inputs=[str(t) for t in inputs], pooling=_POOLINGS[pooling]
    )
    if kwargs.get("normalize") is not None:
        request.normalize = bool(kwargs["normalize"])
    if truncation is not None:
        request.truncation = bool(truncation)
    return request


def tensor_array(tensor: text_pb2.Float32Tensor) -> np.ndarray:
    """The packed float32 bytes as a numpy array (a copy, so it is writable)."""
    return np.frombuffer(tensor.data, dtype="<f4").reshape(tuple(tensor.shape)).astype(np.float32)


def features_results(response: text_pb2.ExtractFeaturesResponse, kwargs: dict[str, Any]) -> list[Any]:
    """Token embeddings as the pipeline returns them ([1, tokens, dim] nested lists, or an array with
    return_tensors=True, numpy standing in for torch); pooled embeddings as 1-D numpy arrays."""
    arrays = [tensor_array(t) for t in response.embeddings]
    if response.pooling == text_pb2.POOLING_NONE and not kwargs.get("return_tensors"):
        return [a.tolist() for a in arrays]
    return arrays


# ------------------------------------------------------------------------------ zero-shot-classification

ZERO_SHOT_KNOWN = ("candidate_labels", "hypothesis_template", "multi_label")


def parse_labels(labels: Any) -> list[str]:
    """As the pipeline does: a comma-separated string or a list."""
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return [str(label) for label in labels]


def zero_shot_request(
    model: str, inputs: Sequence[str], kwargs: dict[str, Any]
) -> text_pb2.ClassifyZeroShotRequest:
    check_known("zero-shot-classification", kwargs, ZERO_SHOT_KNOWN)
    if kwargs.get("candidate_labels") is None:
        raise ValueError("candidate_labels is required")
    return text_pb2.ClassifyZeroShotRequest(
        model=model,
        inputs=[str(t) for t in inputs],
        candidate_labels=parse_labels(kwargs["candidate_labels"]),
        hypothesis_template=kwargs.get("hypothesis_template") or "",
        multi_label=bool(kwargs.get("multi_label")),
    )


def zero_shot_results(response: text_pb2.ClassifyZeroShotResponse, kwargs: dict[str, Any]) -> list[Any]:
    return [
        {"sequence": r.sequence, "labels": list(r.labels), "scores": [float(s) for s in r.scores]}
        for r in response.results
    ]
