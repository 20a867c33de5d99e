"""The feature-extraction adapter's batching rule (tasks/feature_extraction.py `FeatureExtraction.items`,
`_token_count`) through the real scheduler and pipeline: texts of any length share a batch, and each keeps
only its own token rows of the padded batch, so every embedding equals the in-process pipeline's unbatched
one. Fast (no server, the tiny model cached on disk): the `feature_extraction` mutation group runs this file
per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from model_cache import cached_model
from pipelined.v1 import text_pb2
from pipelined_server.errors import InvalidInput
from pipelined_server.tasks import feature_extraction
from serving import Run, Serving, in_process, spec
from tiny_text_models import build_tiny_bert

pytestmark = pytest.mark.timeout(120)

TASK = feature_extraction.TASK
MODEL = "tiny-encoder"
TEXTS = ["the", "a cat sat on the mat", "hello world", "the city was big and old and far away"]


@functools.cache
def model_dir() -> Path:
    return cached_model(build_tiny_bert, head="base")


def local() -> Any:
    return in_process(TASK, model_dir())


def tokens(text: str) -> int:
    return len(local().tokenizer(text)["input_ids"])


def of_tokens(count: int) -> str:
    """A text of exactly `count` tokens ([CLS] and [SEP] included)."""
    text = " ".join(["the"] * (count - 2))
    assert tokens(text) == count
    return text


def array(tensor: Any) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype="<f4").reshape(tuple(tensor.shape))


def unbatched(text: str, **kwargs: Any) -> np.ndarray:
    return local()(text, return_tensors=True, **kwargs).detach().float().numpy()


def run(requests: list[text_pb2.ExtractFeaturesRequest], items: int) -> Run:
    async def scenario() -> Run:
        async with Serving([spec(MODEL, TASK, model_dir())]) as serving:
            return await serving.concurrently(MODEL, feature_extraction.ADAPTER, requests, items=items)

    return asyncio.run(scenario())


def test_texts_of_any_length_share_a_batch_and_keep_their_own_tokens() -> None:
    assert len({tokens(t) for t in TEXTS}) == len(TEXTS)
    requests = [
        text_pb2.ExtractFeaturesRequest(model=MODEL, inputs=TEXTS[:2]),
        text_pb2.ExtractFeaturesRequest(model=MODEL, inputs=TEXTS[2:], pooling=text_pb2.POOLING_MEAN),
    ]
    result = run(requests, items=len(TEXTS))
    served = [array(e) for r in result.responses for e in r.embeddings]
    for i, (embedding, text) in enumerate(zip(served, TEXTS, strict=True)):
        hidden = unbatched(text)
        assert hidden.shape == (1, tokens(text), hidden.shape[-1])
        # Mean pooling averages the text's own tokens only: padding rows would move it.
        want = hidden if i < 2 else hidden[0].mean(axis=0)
        np.testing.assert_allclose(embedding, want, rtol=1e-4, atol=1e-5, err_msg=text)
    assert result.batches == collections.Counter({4: 1})
    assert result.pipeline_calls == 1


def test_the_token_limit_counts_as_the_pipeline_tokenizes() -> None:
    """A text of exactly the model's 128 tokens is served; one more is refused unless truncation is set,
    and then it is cut where the pipeline cuts it (in a batch with a short text)."""
    exact, longer = of_tokens(128), of_tokens(130)

    async def scenario() -> None:
        async with Serving([spec(MODEL, TASK, model_dir())]) as serving:
            with pytest.raises(InvalidInput, match="an input has 130 tokens, more than this model's 128"):
                request = text_pb2.ExtractFeaturesRequest(model=MODEL, inputs=[longer])
                await serving.call(feature_extraction.ADAPTER, request)
            request = text_pb2.ExtractFeaturesRequest(
                model=MODEL, inputs=[exact, longer, "the"], truncation=True
            )
            result = await serving.concurrently(MODEL, feature_extraction.ADAPTER, [request], items=3)
            served = [array(e) for e in result.responses[0].embeddings]
            for embedding, text in zip(served, [exact, longer, "the"], strict=True):
                want = unbatched(text, truncation=True)
                np.testing.assert_allclose(embedding, want, rtol=1e-4, atol=1e-5)
            assert result.batches == collections.Counter({4: 1})
            exact_alone = text_pb2.ExtractFeaturesRequest(model=MODEL, inputs=[exact])
            response = await serving.call(feature_extraction.ADAPTER, exact_alone)
            np.testing.assert_allclose(array(response.embeddings[0]), unbatched(exact), rtol=1e-4, atol=1e-5)

    asyncio.run(scenario())
