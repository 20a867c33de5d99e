"""The image-text-to-text adapter's batching rule (tasks/image_text.py `_load_prompt`, `prompt_items`) through
the real scheduler and pipeline: concurrent prompts that could share a batch are queued together, then each
generation must equal the in-process pipeline's unbatched one, and the batch sizes in the metrics must be
those the rule claims (only prompts of the same text and image sizes, decoded greedily). Fast (no server,
the tiny model cached on disk): the `image_text` mutation group runs this file per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

import pytest
from model_cache import cached_model
from pipelined.v1 import common_pb2, multimodal_pb2
from pipelined_server.config import InputLimits
from pipelined_server.errors import InvalidInput
from pipelined_server.tasks import image_text
from serving import Run, Serving, in_process, png, spec
from tiny_vision_models import build_tiny_llava, tiny_image

pytestmark = pytest.mark.timeout(120)

TASK = image_text.TASK
MAX_NEW_TOKENS = 4
SMALL, LARGE = (40, 30), (25, 50)


@functools.cache
def model_dir() -> Path:
    return cached_model(build_tiny_llava)


def local() -> Any:
    return in_process(TASK, model_dir())


def input_prompt(image: Any, text: str) -> multimodal_pb2.ImageTextPrompt:
    return input_prompt_of([image], text)


def input_prompt_of(images: Any, text: str) -> multimodal_pb2.ImageTextPrompt:
    """A prompt of one image (`images` an image) or several (a list)."""
    listed = images if isinstance(images, list) else [images]
    return multimodal_pb2.ImageTextPrompt(
        input=multimodal_pb2.ImageTextInput(images=[png(i) for i in listed], text=text)
    )


def chat(image: Any, text: str, reply: str = "") -> list[dict[str, Any]]:
    """A user turn with an image and text, then (when `reply` is set) a plain-text assistant turn."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": text}]}
    ]
    if reply:
        messages.append({"role": "assistant", "content": reply})
    return messages


def chat_prompt(messages: list[dict[str, Any]]) -> multimodal_pb2.ImageTextPrompt:
    protos = []
    for m in messages:
        if isinstance(m["content"], str):
            protos.append(multimodal_pb2.MultimodalChatMessage(role=m["role"], text=m["content"]))
            continue
        parts = [
            multimodal_pb2.ChatContentPart(image=png(p["image"]))
            if p["type"] == "image"
            else multimodal_pb2.ChatContentPart(text=p["text"])
            for p in m["content"]
        ]
        protos.append(multimodal_pb2.MultimodalChatMessage(role=m["role"], parts=parts))
    return multimodal_pb2.ImageTextPrompt(chat=multimodal_pb2.MultimodalChat(messages=protos))


def request(
    prompt: multimodal_pb2.ImageTextPrompt, **decoding: Any
) -> multimodal_pb2.GenerateFromImageRequest:
    generation = common_pb2.DecodingOptions(max_new_tokens=MAX_NEW_TOKENS, **decoding)
    return multimodal_pb2.GenerateFromImageRequest(model=TASK, prompts=[prompt], generation=generation)


def expected(**inputs: Any) -> str:
    output = local()(**inputs, return_full_text=False, generate_kwargs={"max_new_tokens": MAX_NEW_TOKENS})
    return image_text.generated_text(output)


def run(requests: list[multimodal_pb2.GenerateFromImageRequest]) -> Run:
    async def scenario() -> Run:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            return await serving.concurrently(TASK, image_text.ADAPTER, requests, items=len(requests))

    return asyncio.run(scenario())


def texts(result: Run) -> list[str]:
    return [r.results[0].generated_text for r in result.responses]


def test_only_prompts_of_the_same_text_and_image_sizes_share_a_batch() -> None:
    images = [tiny_image(seed=110 + i, size=size) for i, size in enumerate([SMALL, SMALL, LARGE, SMALL])]
    question, other = "<image> what is this", "<image> describe it"
    # Same text and size (different pixels): one batch; another size, or another text: alone.
    inputs = [(images[0], question), (images[1], question), (images[2], question), (images[3], other)]
    result = run([request(input_prompt(i, t)) for i, t in inputs])
    assert texts(result) == [expected(images=i, text=t) for i, t in inputs]
    assert result.batches == collections.Counter({2: 1, 1: 2})
    assert result.pipeline_calls == 3


def test_only_chats_of_the_same_shape_share_a_batch() -> None:
    small = [tiny_image(seed=120 + i, size=SMALL) for i in range(3)]
    large = tiny_image(seed=123, size=LARGE)
    chats = [
        chat(small[0], "what color"),
        chat(small[1], "what color"),  # same text and image size as the first: batched with it
        chat(large, "what color"),  # another image size
        chat(small[2], "what shape"),  # another text
        chat(small[0], "what color", reply="it is"),  # one more message (plain text)
        chat(small[1], "what color", reply="it was"),  # ... with another text
    ]
    result = run([request(chat_prompt(c)) for c in chats])
    assert texts(result) == [expected(text=c) for c in chats]
    assert result.batches == collections.Counter({2: 1, 1: 4})
    assert result.pipeline_calls == 5


def test_a_prompt_with_two_images_passes_both() -> None:
    """A prompt's images go to the pipeline as they came: one image as is, two as a list (the pipeline refuses
    a prompt whose `<image>` tokens outnumber its images)."""
    one, two = (
        tiny_image(seed=140, size=SMALL),
        [tiny_image(seed=141 + i, size=s) for i, s in enumerate([SMALL, LARGE])],
    )
    inputs = [(one, "<image> what is this"), (two, "<image><image> compare them")]
    result = run([request(input_prompt_of(images, text)) for images, text in inputs])
    assert texts(result) == [expected(images=i, text=t) for i, t in inputs]
    assert result.batches == collections.Counter({1: 2})


def test_messages_after_a_plain_text_message_count() -> None:
    """A chat whose plain-text turns come first: the messages after them are part of the input and of its key,
    so two chats that differ only there are neither merged nor batched together."""
    opening = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    chats = [
        opening + chat(tiny_image(seed=150, size=SMALL), "what color"),
        opening + chat(tiny_image(seed=151, size=LARGE), "what shape"),
    ]
    result = run([request(chat_prompt(c)) for c in chats])
    assert texts(result) == [expected(text=c) for c in chats]
    assert result.batches == collections.Counter({1: 2})


def test_sampled_prompts_run_alone() -> None:
    """Sampling draws from one random stream per batch: identical prompts that sample never share one."""
    image = tiny_image(seed=130, size=SMALL)
    prompts = [input_prompt(image, "<image> what is this")] * 2 + [chat_prompt(chat(image, "what color"))] * 2
    result = run([request(p, do_sample=True) for p in prompts])
    assert all(isinstance(t, str) for t in texts(result))
    assert result.batches == collections.Counter({1: 4})
    assert result.pipeline_calls == 4


def test_prompts_without_content_are_refused() -> None:
    image = png(tiny_image(seed=131, size=SMALL))
    refused = [
        (
            multimodal_pb2.ImageTextPrompt(input=multimodal_pb2.ImageTextInput(text="hi")),
            r"^an image-text prompt needs at least one image \(ImageTextInput\.images\)$",
        ),
        (
            multimodal_pb2.ImageTextPrompt(chat=multimodal_pb2.MultimodalChat()),
            "^a chat prompt needs at least one message$",
        ),
        (
            multimodal_pb2.ImageTextPrompt(),
            r"^a prompt needs either `input` \(images and text\) or `chat` \(messages\)$",
        ),
    ]
    too_many = multimodal_pb2.ImageTextPrompt(
        input=multimodal_pb2.ImageTextInput(images=[image] * 3, text="hi")
    )

    async def scenario() -> None:
        async with Serving(
            [spec(TASK, TASK, model_dir())], limits=InputLimits(max_inputs_per_request=2)
        ) as serving:
            for prompt, message in refused:
                with pytest.raises(InvalidInput, match=message):
                    await serving.call(image_text.ADAPTER, request(prompt))
            with pytest.raises(
                InvalidInput, match=r"^3 images in one request; the server accepts at most 2 "
            ):
                await serving.call(image_text.ADAPTER, request(too_many))

    asyncio.run(scenario())


def test_a_prompt_without_decoding_options_is_served() -> None:
    """No generation options at all: the model's own generation config, as in process."""
    image = tiny_image(seed=132, size=SMALL)
    bare = multimodal_pb2.GenerateFromImageRequest(
        model=TASK, prompts=[input_prompt(image, "<image> what is this")]
    )

    async def scenario() -> Any:
        async with Serving([spec(TASK, TASK, model_dir())]) as serving:
            return await serving.call(image_text.ADAPTER, bare)

    response = asyncio.run(scenario())
    local_text = image_text.generated_text(
        local()(images=image, text="<image> what is this", return_full_text=False)
    )
    assert response.results[0].generated_text == local_text
