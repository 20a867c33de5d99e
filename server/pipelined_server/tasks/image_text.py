"""image-text-to-text: prompts (images + text, or a chat) -> pipeline inputs, and token streaming.

The server always asks the pipeline for the new text only (`return_full_text=False`); the SDK rebuilds
the full text or chat from its own prompt exactly as the pipeline does, so images never travel back.

Batching rule: prompts of different token lengths would be padded in one batch, and sampling draws from
one random stream per batch, so only identical prompts (same text, same image sizes) decoded greedily or
by beam search share a batch. Streaming calls always run alone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

from pipelined.v1 import common_pb2, multimodal_pb2

from ..config import InputLimits, ServerConfig
from ..errors import InvalidInput
from ..images import ImageLimits
from ..loading import run_batch
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_count
from .decoding import decoding_kwargs
from .generation_stream import stream_pieces
from .image_input import load_image_input

TASK = "image-text-to-text"


def call_kwargs(generation: common_pb2.DecodingOptions, request: Any, limits: InputLimits) -> dict[str, Any]:
    generate = decoding_kwargs(generation, limits)
    kwargs: dict[str, Any] = {"return_full_text": False}
    if generate:
        kwargs["generate_kwargs"] = generate
    if request.HasField("continue_final_message"):
        kwargs["continue_final_message"] = request.continue_final_message
    return kwargs


def _load_prompt(prompt: multimodal_pb2.ImageTextPrompt, limits: ImageLimits) -> tuple[Any, Hashable]:
    """Blocking: the pipeline input of one prompt and the key of the prompts it may batch with."""
    kind = prompt.WhichOneof("prompt")
    if kind == "input":
        images = [load_image_input(i, limits) for i in prompt.input.images]
        if not images:
            raise InvalidInput("an image-text prompt needs at least one image (ImageTextInput.images)")
        payload = {"images": images[0] if len(images) == 1 else images, "text": prompt.input.text}
        return payload, ("input", prompt.input.text, tuple(i.size for i in images))
    if kind == "chat":
        if not prompt.chat.messages:
            raise InvalidInput("a chat prompt needs at least one message")
        messages: list[dict[str, Any]] = []
        shape: list[Any] = []
        for message in prompt.chat.messages:
            if not message.parts:
                messages.append({"role": message.role, "content": message.text})
                shape.append((message.role, message.text))
                continue
            content: list[dict[str, Any]] = []
            for part in message.parts:
                if part.WhichOneof("part") == "image":
                    image = load_image_input(part.image, limits)
                    content.append({"type": "image", "image": image})
                    shape.append(image.size)
                else:
                    content.append({"type": "text", "text": part.text})
                    shape.append(part.text)
            messages.append({"role": message.role, "content": content})
        return messages, ("chat", tuple(shape))
    raise InvalidInput("a prompt needs either `input` (images and text) or `chat` (messages)")


def _count_images(prompt: multimodal_pb2.ImageTextPrompt) -> int:
    if prompt.WhichOneof("prompt") == "input":
        return len(prompt.input.images)
    return sum(1 for m in prompt.chat.messages for p in m.parts if p.WhichOneof("part") == "image")


def prompt_items(
    prompts: Sequence[multimodal_pb2.ImageTextPrompt], kwargs: dict[str, Any], config: ServerConfig
) -> list[Item]:
    """Blocking: one item per prompt, its images decoded; the images of all prompts count as inputs."""
    # Every image counts as an input: a chat may carry several per prompt.
    images = sum(_count_images(p) for p in prompts)
    if images:
        check_count(images, "images", config.limits)
    loaded = [_load_prompt(p, config.images) for p in prompts]
    sampling = bool(kwargs.get("generate_kwargs", {}).get("do_sample"))
    return [Item(payload, key=key, batchable=not sampling) for payload, key in loaded]


def generated_text(output: Any) -> str:
    """The new text of one prompt's output (a one-element list of {"generated_text": ...})."""
    record = output[0] if isinstance(output, list) else output
    text = record["generated_text"]
    if not isinstance(text, str):
        raise TypeError(f"expected the new text, got {type(text).__name__}")
    return text


def stream_text(
    instance: ModelInstance, item: Item, kwargs: dict[str, Any], timeout: float | None
) -> AsyncIterator[str]:
    """The new text of one prompt as it is generated, on whichever replica runs it; stops at the next
    token when the caller goes away."""

    def generate(pipe: Any, extra: dict[str, Any]) -> Any:
        call = {**kwargs, "generate_kwargs": {**kwargs.get("generate_kwargs", {}), **extra}}
        return run_batch(pipe, [item.payload], call)

    return stream_pieces(instance, generate, lambda pipe: pipe.processor.tokenizer, timeout)


class ImageTextToText(
    Adapter[multimodal_pb2.GenerateFromImageRequest, multimodal_pb2.GenerateFromImageResponse]
):
    task = TASK

    def arguments(
        self, request: multimodal_pb2.GenerateFromImageRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return call_kwargs(request.generation, request, config.limits)

    def items(
        self,
        request: multimodal_pb2.GenerateFromImageRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        check_count(len(request.prompts), "prompts", config.limits)
        return prompt_items(request.prompts, kwargs, config)

    def response(
        self,
        request: multimodal_pb2.GenerateFromImageRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> multimodal_pb2.GenerateFromImageResponse:
        return multimodal_pb2.GenerateFromImageResponse(
            results=[multimodal_pb2.GeneratedImageText(generated_text=generated_text(o)) for o in outputs],
            model=instance.name,
        )


ADAPTER = ImageTextToText()
