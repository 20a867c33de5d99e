"""The text-generation adapter's batching rule (tasks/text_generation.py `batch_key`, `TextGeneration.items`)
through the real scheduler and pipeline: concurrent prompts that could share a batch are queued together,
then each generation must equal the in-process pipeline's unbatched one, and the batch sizes and pipeline
calls in the metrics must be those the rule claims. Fast (no server, the tiny model cached on disk): the
`text_generation` mutation group runs this file per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

import pytest
from model_cache import cached_model
from pipelined.v1 import common_pb2, text_pb2
from pipelined_server.tasks import text_generation
from serving import Run, Serving, in_process, spec
from tiny_text_models import build_tiny_causal_lm

pytestmark = pytest.mark.timeout(120)

TASK = "text-generation"
MODEL = "tiny-lm"
MAX_NEW_TOKENS = 6
CHAT = [
    {"role": "system", "content": "you are good"},
    {"role": "user", "content": "what is the capital of france"},
]


@functools.cache
def lm_dir() -> Path:
    return cached_model(build_tiny_causal_lm)


def local() -> Any:
    return in_process(TASK, lm_dir())


def token_count(prompt: str | list[dict[str, str]]) -> int:
    tokenizer = local().tokenizer
    if isinstance(prompt, str):
        return len(tokenizer(prompt)["input_ids"])
    ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def generation_input(prompt: str | list[dict[str, str]]) -> text_pb2.GenerationInput:
    if isinstance(prompt, str):
        return text_pb2.GenerationInput(prompt=prompt)
    messages = [text_pb2.ChatMessage(**m) for m in prompt]
    return text_pb2.GenerationInput(chat=text_pb2.Chat(messages=messages))


def request(prompt: str | list[dict[str, str]], **decoding: Any) -> text_pb2.GenerateTextRequest:
    seed = decoding.pop("seed", None)
    parameters = text_pb2.GenerationParameters(
        decoding=common_pb2.DecodingOptions(max_new_tokens=MAX_NEW_TOKENS, **decoding), seed=seed
    )
    return text_pb2.GenerateTextRequest(model=MODEL, inputs=[generation_input(prompt)], parameters=parameters)


def expected(prompt: str | list[dict[str, str]], seed: int | None = None, **kwargs: Any) -> list[Any]:
    """The unbatched in-process generations of one prompt, as the adapter answers them."""
    if seed is not None:
        from transformers import set_seed

        set_seed(seed)
    records = local()(prompt, max_new_tokens=MAX_NEW_TOKENS, **kwargs)
    return [text_generation._generation(r) for r in records]


def generations(result: Run) -> list[list[Any]]:
    return [list(r.results[0].generations) for r in result.responses]


def run(requests: list[text_pb2.GenerateTextRequest]) -> Run:
    async def scenario() -> Run:
        async with Serving([spec(MODEL, TASK, lm_dir())]) as serving:
            adapter = text_generation.ADAPTER
            return await serving.concurrently(MODEL, adapter, requests, items=len(requests))

    return asyncio.run(scenario())


def test_greedy_prompts_batch_by_token_count() -> None:
    """Equal token counts need no padding and share a batch; other lengths would be left-padded: apart."""
    prompts = ["hello world", "the city was very big and old", "hello world", "the city was very big and old"]
    assert token_count(prompts[0]) != token_count(prompts[1])
    result = run([request(p) for p in prompts])
    assert generations(result) == [expected(p) for p in prompts]
    assert result.batches == collections.Counter({2: 2})
    assert result.pipeline_calls == 2


def test_a_chat_and_a_prompt_of_equal_token_count_never_share_a_batch() -> None:
    """A chat and a plain string fail together in one pipeline call (and would be retried one by one, with
    equal outputs): the batch sizes and calls show whether they were ever put together."""
    prompt = "a"
    while token_count(prompt) < token_count(CHAT):
        prompt += "b" if prompt.endswith("a") else "a"
    assert token_count(prompt) == token_count(CHAT)
    result = run([request(CHAT), request(prompt)])
    assert generations(result) == [expected(CHAT), expected(prompt)]
    assert result.batches == collections.Counter({1: 2})
    assert result.pipeline_calls == 2


def test_sampled_generations_run_alone_each_seeded() -> None:
    """Sampling in one batch would share one random stream: each seeded generation runs alone, seeded right
    before it, so it equals the in-process generation seeded alike."""
    prompts = ["hello world", "hello world", "the city"]
    result = run([request(p, do_sample=True, temperature=1.5, seed=7) for p in prompts])
    assert generations(result) == [expected(p, seed=7, do_sample=True, temperature=1.5) for p in prompts]
    assert result.batches == collections.Counter({1: 3})
    assert result.pipeline_calls == 3
