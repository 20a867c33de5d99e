"""The embedded text models, served as `pipelined-server` serves them by default (MiniLM sentence embeddings
with mean pooling + normalisation, SmolLM2 chat with greedy decoding). Skipped without their packages."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from harness import ServerThread  # noqa: E402
from pipelined import Client  # noqa: E402
from pipelined_server.config import ServerConfig, embedded_spec  # noqa: E402
from pipelined_server.sources.embedded import is_available  # noqa: E402

pytestmark = pytest.mark.real_weights
MINILM, SMOLLM = "all-minilm-l6-v2", "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    missing = [n for n in (MINILM, SMOLLM) if not is_available(n)]
    if missing:
        pytest.skip(f"embedded weight packages not installed for: {', '.join(missing)}")
    config = ServerConfig(
        host="127.0.0.1", port=0, metrics_port=0, models=(embedded_spec(MINILM), embedded_spec(SMOLLM))
    )
    server = ServerThread(config)
    yield Client(server.target, timeout=300)
    server.stop()


def test_embeddings_rank_a_paraphrase_above_an_unrelated_sentence(client: Client) -> None:
    embed = client.pipeline("feature-extraction")
    query, paraphrase, unrelated = embed(
        [
            "How do I bake bread at home?",
            "What is a simple recipe for homemade bread?",
            "The stock market fell today.",
        ]
    )
    assert query.shape == (384,) and float(np.linalg.norm(query)) == pytest.approx(1.0, abs=1e-5)
    assert float(query @ paraphrase) > float(query @ unrelated) + 0.2


def test_minilm_sentence_embedding_is_the_mean_of_local_token_embeddings(client: Client) -> None:
    import transformers
    from pipelined_server.sources.embedded import materialize

    text = "A sentence to embed."
    local = np.asarray(transformers.pipeline("feature-extraction", model=str(materialize(MINILM)))(text)[0])
    expected = local.mean(axis=0) / np.linalg.norm(local.mean(axis=0))
    np.testing.assert_allclose(client.pipeline("feature-extraction")(text), expected, atol=1e-5)


def test_chat_model_knows_the_capital_of_france(client: Client) -> None:
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.pipeline("text-generation")(chat, max_new_tokens=40)[0]["generated_text"][-1]
    assert answer["role"] == "assistant"
    assert "Paris" in answer["content"]


def test_streaming_yields_the_unary_greedy_text(client: Client) -> None:
    pipe = client.pipeline("text-generation", max_new_tokens=40)
    chat = [{"role": "user", "content": "Name three colours."}]
    pieces = list(pipe.stream(chat))
    assert len(pieces) > 3
    assert "".join(pieces) == pipe(chat, return_full_text=False)[0]["generated_text"]
