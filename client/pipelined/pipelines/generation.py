"""text-generation: prompts, chats and the pipeline's generation arguments -> GenerateText requests,
responses -> the pipeline's `[{"generated_text": ...}]` records; the pipeline, and its token stream."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from .. import _transport
from ..v1 import text_pb2
from .base import check_known
from .text import TextPipeline

_GENERATION = (
    "do_sample",
    "temperature",
    "top_k",
    "top_p",
    "max_new_tokens",
    "repetition_penalty",
    "num_return_sequences",
    "seed",
)
# The ones DecodingOptions (common.proto) holds; the rest are fields of GenerationParameters.
_SHARED = frozenset({"do_sample", "temperature", "top_k", "top_p", "max_new_tokens", "repetition_penalty"})
KNOWN = (*_GENERATION, "stop_sequence", "return_full_text")


def is_chat(inputs: Any) -> bool:
    return isinstance(inputs, list | tuple) and bool(inputs) and all(isinstance(m, dict) for m in inputs)


def generation_input(prompt: Any) -> text_pb2.GenerationInput:
    if isinstance(prompt, str):
        return text_pb2.GenerationInput(prompt=prompt)
    if is_chat(prompt):
        messages = [text_pb2.ChatMessage(role=str(m["role"]), content=str(m["content"])) for m in prompt]
        return text_pb2.GenerationInput(chat=text_pb2.Chat(messages=messages))
    raise TypeError(
        f"a prompt is a string or a chat (a list of role/content dicts), got {type(prompt).__name__}"
    )


def parameters(kwargs: dict[str, Any]) -> text_pb2.GenerationParameters:
    check_known("text-generation", kwargs, KNOWN)
    merged = dict(kwargs)
    stop = merged.pop("stop_sequence", None)
    params = text_pb2.GenerationParameters()
    for name in _GENERATION:
        if merged.get(name) is not None:
            if name in _SHARED:
                setattr(params.decoding, name, merged[name])
            else:
                setattr(params, name, merged[name])
    if stop:
        params.stop_sequences.extend([stop] if isinstance(stop, str) else list(stop))
    if merged.get("return_full_text") is not None:
        params.return_full_text = bool(merged["return_full_text"])
    return params


def generate_request(
    model: str, prompts: Sequence[Any], kwargs: dict[str, Any]
) -> text_pb2.GenerateTextRequest:
    return text_pb2.GenerateTextRequest(
        model=model, inputs=[generation_input(p) for p in prompts], parameters=parameters(kwargs)
    )


def _record(generation: text_pb2.Generation) -> dict[str, Any]:
    if generation.WhichOneof("output") == "chat":
        return {"generated_text": [{"role": m.role, "content": m.content} for m in generation.chat.messages]}
    return {"generated_text": generation.text}


def generate_results(response: text_pb2.GenerateTextResponse, kwargs: dict[str, Any]) -> list[Any]:
    return [[_record(g) for g in result.generations] for result in response.results]


class TextGenerationPipeline(TextPipeline):
    """Extras over transformers: `seed` makes sampled generations reproducible; `stream()` yields the
    new text piece by piece as it is generated."""

    task = "text-generation"
    rpc = "GenerateText"
    build = staticmethod(generate_request)
    read = staticmethod(generate_results)

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, str) or is_chat(inputs)

    def stream_request(self, prompt: Any, kwargs: dict[str, Any]) -> text_pb2.StreamGenerateTextRequest:
        merged = {k: v for k, v in {**self.defaults, **kwargs}.items() if k != "return_full_text"}
        return text_pb2.StreamGenerateTextRequest(
            model=self.model,
            input=generation_input(prompt),
            parameters=parameters(merged),
        )

    def stream(self, prompt: Any, **kwargs: Any) -> Iterator[str]:
        """Yields pieces of new text (prompt excluded) as the server generates them."""
        timeout = self.call_timeout(kwargs)
        request = self.stream_request(prompt, kwargs)
        for response in _transport.opened_stream(
            lambda: self.client.text.StreamGenerateText(request, timeout=timeout), self.waiting()
        ):
            yield response.text
