"""Text tasks over the TextService: the transformers pipelines' call arguments -> requests, responses ->
the pipelines' output dicts (same keys, same nesting, Python floats for scores), and the pipelines.

One input -> its result; a list -> a list, sent in requests of up to `inputs_per_request` inputs with at
most `max_in_flight` requests at once; an iterator -> a generator (one request per input, bounded in
flight, results in order). Call arguments override the defaults given to `client.pipeline()`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..v1 import common_pb2, text_pb2
from ..wire.labels import parse_labels
from .base import DEFAULT_MAX_IN_FLIGHT, RemotePipeline, Stubs, check_known

# Small enough that one request stays well under the server's default limit of inputs per request.
DEFAULT_INPUTS_PER_REQUEST = 16

# (model, inputs, kwargs) -> request; (response, kwargs) -> one result per input.
RequestBuilder = Callable[[str, Sequence[Any], dict[str, Any]], Any]
ResultReader = Callable[[Any, dict[str, Any]], list[Any]]

_FUNCTIONS = {
    "sigmoid": common_pb2.SCORE_FUNCTION_SIGMOID,
    "softmax": common_pb2.SCORE_FUNCTION_SOFTMAX,
    "none": common_pb2.SCORE_FUNCTION_NONE,
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


def tensor_array(tensor: common_pb2.Float32Tensor) -> np.ndarray:
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


# ------------------------------------------------------------------------------ pipelines


class TextPipeline(RemotePipeline):
    """Text call semantics; subclasses name the task, the RPC and the conversions."""

    rpc = ""
    build: RequestBuilder
    read: ResultReader

    def __init__(
        self,
        client: Stubs,
        model: str | None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        inputs_per_request: int = DEFAULT_INPUTS_PER_REQUEST,
        **defaults: Any,
    ) -> None:
        self.inputs_per_request = inputs_per_request
        super().__init__(client, model, max_in_flight, **defaults)

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        type(self).build(self.model, [], kwargs)

    def parse_call(self, inputs: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        # Checked when the request is built.
        return inputs, {**self.defaults, **kwargs}

    def method(self) -> Any:
        return getattr(self.client.text, self.rpc)

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str | dict)

    def request_unit(self, one: Any) -> list[Any]:
        return [one]

    def request_units(self, items: list[Any]) -> list[Any]:
        """A list's inputs, in requests of up to `inputs_per_request`."""
        size = max(1, self.inputs_per_request)
        return [items[i : i + size] for i in range(0, len(items), size)]

    def build_request(self, unit: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return type(self).build(self.model, unit, kwargs)

    def read_results(self, response: Any, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        return type(self).read(response, kwargs)


class TextClassificationPipeline(TextPipeline):
    task = "text-classification"
    rpc = "ClassifyText"
    build = staticmethod(classify_request)
    read = staticmethod(classify_results)

    def present(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        # transformers wraps the best label of a single string (not of a text pair) in a list.
        if isinstance(inputs, str) and "top_k" not in kwargs:
            return [result]
        return result


class _StringInputs(TextPipeline):
    """Tasks whose one input is a string (anything else is a batch)."""

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str)


class TokenClassificationPipeline(_StringInputs):
    task = "token-classification"
    rpc = "ClassifyTokens"
    build = staticmethod(tokens_request)
    read = staticmethod(tokens_results)


class FillMaskPipeline(_StringInputs):
    task = "fill-mask"
    rpc = "FillMask"
    build = staticmethod(fill_request)
    read = staticmethod(fill_results)


class FeatureExtractionPipeline(_StringInputs):
    """Extras over transformers: `pooling` ("none", "mean", "cls") and `normalize` give ready-to-use
    sentence embeddings (1-D numpy arrays); a model may default them (the embedded MiniLM does)."""

    task = "feature-extraction"
    rpc = "ExtractFeatures"
    build = staticmethod(features_request)
    read = staticmethod(features_results)


class ZeroShotClassificationPipeline(_StringInputs):
    task = "zero-shot-classification"
    rpc = "ClassifyZeroShot"
    build = staticmethod(zero_shot_request)
    read = staticmethod(zero_shot_results)

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        check_known(self.task, kwargs, ZERO_SHOT_KNOWN)

    def parse_call(self, inputs: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        # transformers accepts the candidate labels as the second positional argument.
        if args:
            if len(args) > 1 or "candidate_labels" in kwargs:
                raise TypeError("give candidate_labels once: positionally or by name")
            kwargs["candidate_labels"] = args[0]
        return super().parse_call(inputs, **kwargs)


PIPELINES: dict[str, type[TextPipeline]] = {
    cls.task: cls
    for cls in (
        TextClassificationPipeline,
        TokenClassificationPipeline,
        FillMaskPipeline,
        FeatureExtractionPipeline,
        ZeroShotClassificationPipeline,
    )
}
