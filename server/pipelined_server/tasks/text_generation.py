"""text-generation: GenerateTextRequest -> pipeline arguments, generations -> GenerateTextResponse.

Batching rule (unary calls): greedy generations of prompts with the same token count and the same
form (plain or chat) share a batch: equal lengths need no padding, so every prompt sees exactly the
positions and mask it sees alone. Prompts of different lengths would be left-padded, which shifts
positions and can change a greedy choice: they never share a batch. Sampled generations run alone,
seeded right before they run when the request sets `seed` (a shared batch would share the RNG), and
so does every generation of a tokenizer without a pad token (the pipeline cannot batch those).
Streaming runs alone too (see generation_stream.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from pipelined.v1 import text_pb2

from ..config import InputLimits, ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_count, check_generation, check_text, positive
from .decoding import decoding_kwargs

TASK = "text-generation"
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class GenerationCall:
    """A generation's pipeline arguments and how it may be scheduled."""

    kwargs: dict[str, Any]
    seed: int | None
    sampling: bool


def call_kwargs(
    params: text_pb2.GenerationParameters, instance: ModelInstance, limits: InputLimits
) -> GenerationCall:
    kwargs: dict[str, Any] = decoding_kwargs(params.decoding, limits)
    if params.HasField("num_return_sequences"):
        positive("num_return_sequences", params.num_return_sequences)
        kwargs["num_return_sequences"] = params.num_return_sequences
        check_generation(kwargs, limits)
    if params.stop_sequences:
        if any(not s for s in params.stop_sequences):
            raise InvalidInput("stop_sequences must not contain an empty string")
        kwargs["stop_sequence"] = list(params.stop_sequences)
    if params.HasField("return_full_text"):
        kwargs["return_full_text"] = params.return_full_text
    return GenerationCall(
        kwargs=kwargs,
        seed=_seed(params),
        sampling=_samples(kwargs, instance),
    )


def _seed(params: text_pb2.GenerationParameters) -> int | None:
    return params.seed if params.HasField("seed") else None


def _samples(kwargs: dict[str, Any], instance: ModelInstance) -> bool:
    """Whether this generation samples: the request's choice, else the served defaults, else the model's."""
    if "do_sample" in kwargs:
        return bool(kwargs["do_sample"])
    if "do_sample" in instance.spec.pipeline_kwargs:
        return bool(instance.spec.pipeline_kwargs["do_sample"])
    config = getattr(instance.pipeline.model, "generation_config", None)
    return bool(getattr(config, "do_sample", False))


def prompt_of(item: text_pb2.GenerationInput, limits: InputLimits, where: str) -> str | list[dict[str, str]]:
    """The pipeline's input: a string, or a chat as a list of {"role", "content"} dicts."""
    form = item.WhichOneof("input")
    if form == "prompt":
        check_text(item.prompt, limits, where)
        return item.prompt
    if form == "chat":
        if not item.chat.messages:
            raise InvalidInput(f"{where}.chat has no messages")
        messages = []
        for i, message in enumerate(item.chat.messages):
            if message.role not in ROLES:
                raise InvalidInput(
                    f"{where}.chat.messages[{i}].role {message.role!r}: use one of {', '.join(ROLES)}"
                )
            check_text(message.content, limits, f"{where}.chat.messages[{i}].content")
            messages.append({"role": message.role, "content": message.content})
        return messages
    raise InvalidInput(f"{where} is empty: set a prompt or a chat")


def prompts_of(
    request: text_pb2.GenerateTextRequest, limits: InputLimits
) -> list[str | list[dict[str, str]]]:
    check_count(len(request.inputs), "inputs", limits)
    return [prompt_of(item, limits, f"inputs[{i}]") for i, item in enumerate(request.inputs)]


def _token_count(instance: ModelInstance, prompt: str | list[dict[str, str]]) -> int:
    tokenizer = instance.tokenizer
    if isinstance(prompt, str):
        return len(tokenizer(prompt)["input_ids"])
    continue_final = prompt[-1]["role"] == "assistant"
    ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=not continue_final, continue_final_message=continue_final, tokenize=True
    )
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def batch_key(instance: ModelInstance, prompt: str | list[dict[str, str]]) -> Hashable:
    return ("chat" if isinstance(prompt, list) else "prompt", _token_count(instance, prompt))


def run_alone(pipe: Any, prompt: Any, kwargs: dict[str, Any], seed: int | None, **extra: Any) -> Any:
    """Runs on the model's worker thread: seed, then one generation (`extra`: e.g. a streamer)."""
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    return pipe(prompt, **kwargs, **extra)


def _generation(record: dict[str, Any]) -> text_pb2.Generation:
    text = record.get("generated_text")
    if isinstance(text, list):
        return text_pb2.Generation(
            chat=text_pb2.Chat(
                messages=[
                    text_pb2.ChatMessage(role=m.get("role", ""), content=m.get("content", "")) for m in text
                ]
            )
        )
    return text_pb2.Generation(text=text or "")


class TextGeneration(Adapter[text_pb2.GenerateTextRequest, text_pb2.GenerateTextResponse]):
    task = TASK

    def arguments(
        self, request: text_pb2.GenerateTextRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request.parameters, instance, config.limits).kwargs

    def items(
        self,
        request: text_pb2.GenerateTextRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        prompts = prompts_of(request, config.limits)
        if _samples(kwargs, instance) or instance.tokenizer.pad_token_id is None:
            seed = _seed(request.parameters)
            return [Item(call=partial(run_alone, prompt=p, kwargs=kwargs, seed=seed)) for p in prompts]
        return [Item(p, key=batch_key(instance, p)) for p in prompts]

    def response(
        self,
        request: text_pb2.GenerateTextRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> text_pb2.GenerateTextResponse:
        return text_pb2.GenerateTextResponse(
            results=[
                text_pb2.GeneratedSequences(generations=[_generation(r) for r in records])
                for records in outputs
            ],
            model=instance.name,
        )


ADAPTER = TextGeneration()
