"""`client.pipeline(<text task>)`: transformers' call semantics over the TextService.

One input -> its result; a list -> a list, sent in requests of up to `inputs_per_request` inputs with at
most `max_in_flight` requests at once; an iterator -> a generator (one request per input, bounded in
flight, results in order). Call arguments override the defaults given to `client.pipeline()`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import grpc

from . import generation, text
from .errors import from_rpc_error
from .v1 import text_pb2

if TYPE_CHECKING:
    from .client import Stubs

DEFAULT_MAX_IN_FLIGHT = 4
# Small enough that one request stays well under the server's default limit of inputs per request.
DEFAULT_INPUTS_PER_REQUEST = 16

# (model, inputs, kwargs) -> request; (response, kwargs) -> one result per input.
RequestBuilder = Callable[[str, Sequence[Any], dict[str, Any]], Any]
ResultReader = Callable[[Any, dict[str, Any]], list[Any]]


class TextPipeline:
    """Shared call semantics; subclasses name the task, the RPC and the conversions."""

    task = ""
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
        self.client = client
        self.model = model or ""
        self.defaults = defaults
        self.max_in_flight = max_in_flight
        self.inputs_per_request = inputs_per_request
        self._validate(defaults)  # fail at construction on unknown defaults, as transformers does

    def _validate(self, kwargs: dict[str, Any]) -> None:
        type(self).build(self.model, [], kwargs)

    # ---- hooks the asyncio twin shares: request building and result reading, apart from the transport
    def method(self) -> Any:
        return getattr(self.client.text, self.rpc)

    def arguments(self, inputs: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """A call's input(s) and call arguments (defaults merged) as the pipeline reads them."""
        return inputs, {**self.defaults, **kwargs}

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str | dict)

    def request(self, items: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        return type(self).build(self.model, items, kwargs)

    def results(self, response: Any, kwargs: dict[str, Any]) -> list[Any]:
        """One result per input of the request."""
        return type(self).read(response, kwargs)

    def present_single(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
        return result

    def chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        """A list's inputs, in requests of up to `inputs_per_request`."""
        size = max(1, self.inputs_per_request)
        return [items[i : i + size] for i in range(0, len(items), size)]

    # ---- the synchronous transport
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs, merged = self.arguments(*args, **kwargs)
        if self.is_single(inputs):
            return self.present_single(self._send([inputs], merged)[0], inputs, merged)
        if isinstance(inputs, list | tuple):
            return list(self._pipelined(self.chunks(list(inputs)), merged))
        if isinstance(inputs, Iterable):
            return self._pipelined(([item] for item in inputs), merged)
        raise TypeError(f"unsupported {self.task} input of type {type(inputs).__name__}")

    def _send(self, items: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
        request = self.request(items, kwargs)
        try:
            response = self.method()(request, timeout=self.client.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self.results(response, kwargs)

    def _pipelined(self, groups: Iterable[Sequence[Any]], kwargs: dict[str, Any]) -> Iterator[Any]:
        pending: deque[Any] = deque()
        method = self.method()

        def results(future: Any) -> list[Any]:
            try:
                return self.results(future.result(), kwargs)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None

        try:
            for group in groups:
                pending.append(method.future(self.request(group, kwargs), timeout=self.client.timeout))
                if len(pending) >= self.max_in_flight:
                    yield from results(pending.popleft())
            while pending:
                yield from results(pending.popleft())
        finally:
            for future in pending:
                future.cancel()


class TextClassificationPipeline(TextPipeline):
    task = "text-classification"
    rpc = "ClassifyText"
    build = staticmethod(text.classify_request)
    read = staticmethod(text.classify_results)

    def present_single(self, result: Any, inputs: Any, kwargs: dict[str, Any]) -> Any:
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
    build = staticmethod(text.tokens_request)
    read = staticmethod(text.tokens_results)


class FillMaskPipeline(_StringInputs):
    task = "fill-mask"
    rpc = "FillMask"
    build = staticmethod(text.fill_request)
    read = staticmethod(text.fill_results)


class FeatureExtractionPipeline(_StringInputs):
    """Extras over transformers: `pooling` ("none", "mean", "cls") and `normalize` give ready-to-use
    sentence embeddings (1-D numpy arrays); a model may default them (the embedded MiniLM does)."""

    task = "feature-extraction"
    rpc = "ExtractFeatures"
    build = staticmethod(text.features_request)
    read = staticmethod(text.features_results)


class ZeroShotClassificationPipeline(_StringInputs):
    task = "zero-shot-classification"
    rpc = "ClassifyZeroShot"
    build = staticmethod(text.zero_shot_request)
    read = staticmethod(text.zero_shot_results)

    def _validate(self, kwargs: dict[str, Any]) -> None:
        text.check_known(self.task, kwargs, text.ZERO_SHOT_KNOWN)

    def arguments(self, inputs: Any, *args: Any, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        # transformers accepts the candidate labels as the second positional argument.
        if args:
            if len(args) > 1 or "candidate_labels" in kwargs:
                raise TypeError("give candidate_labels once: positionally or by name")
            kwargs["candidate_labels"] = args[0]
        return super().arguments(inputs, **kwargs)


class TextGenerationPipeline(TextPipeline):
    """Extras over transformers: `seed` makes sampled generations reproducible; `stream()` yields the
    new text piece by piece as it is generated."""

    task = "text-generation"
    rpc = "GenerateText"
    build = staticmethod(generation.generate_request)
    read = staticmethod(generation.generate_results)

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str) or generation.is_chat(inputs)

    def stream_request(self, prompt: Any, kwargs: dict[str, Any]) -> text_pb2.StreamGenerateTextRequest:
        merged = {k: v for k, v in {**self.defaults, **kwargs}.items() if k != "return_full_text"}
        return text_pb2.StreamGenerateTextRequest(
            model=self.model,
            input=generation.generation_input(prompt),
            parameters=generation.parameters(merged),
        )

    def stream(self, prompt: Any, **kwargs: Any) -> Iterator[str]:
        """Yields pieces of new text (prompt excluded) as the server generates them."""
        request = self.stream_request(prompt, kwargs)
        try:
            for response in self.client.text.StreamGenerateText(request, timeout=self.client.timeout):
                yield response.text
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None


PIPELINES: dict[str, type[TextPipeline]] = {
    cls.task: cls
    for cls in (
        TextClassificationPipeline,
        TokenClassificationPipeline,
        FillMaskPipeline,
        FeatureExtractionPipeline,
        ZeroShotClassificationPipeline,
        TextGenerationPipeline,
    )
}
# transformers' task aliases.
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
