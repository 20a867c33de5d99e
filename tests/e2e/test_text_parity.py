"""Remote results equal the in-process pipeline's on the same tiny model, input and arguments, for every
text task and every parameter the contract exposes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from harness import ServerThread, concurrently, until_batched
from pipelined import Client
from text_fixtures import assert_close, local_pipeline, text_server

TEXTS = ["john lives in paris", "the weather is good today", "hello world", "mary visited berlin and london"]


@pytest.fixture(scope="module")
def server() -> ServerThread:
    return text_server()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=120)


def _both(client: Client, name: str, task: str, inputs: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
    remote = client.pipeline(task, model=name)(inputs, *args, **kwargs)
    local = local_pipeline(name)(inputs, *args, **kwargs)
    return remote, local


# ------------------------------------------------------------------------------ text-classification

PAIR = {"text": "john lives in paris", "text_pair": "paris is the capital of france"}


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"top_k": 2},
        {"top_k": None},
        {"top_k": 1},
        {"function_to_apply": "sigmoid"},
        {"function_to_apply": "none", "top_k": None},
        {"function_to_apply": "softmax"},
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    "inputs", [TEXTS[0], PAIR, TEXTS, [PAIR, PAIR]], ids=["single", "pair", "batch", "pairs"]
)
def test_text_classification(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-sentiment", "text-classification", inputs, **kwargs)
    assert_close(remote, local)


def test_sentiment_analysis_alias_and_defaults(client: Client) -> None:
    pipe = client.pipeline("sentiment-analysis", model="tiny-sentiment", top_k=None)
    assert_close(pipe(TEXTS[1]), local_pipeline("tiny-sentiment")(TEXTS[1], top_k=None))
    assert_close(pipe(TEXTS[1], top_k=1), local_pipeline("tiny-sentiment")(TEXTS[1], top_k=1))


# ------------------------------------------------------------------------------ token-classification


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"aggregation_strategy": "none"},
        {"aggregation_strategy": "simple"},
        {"aggregation_strategy": "first"},
        {"aggregation_strategy": "max"},
        {"aggregation_strategy": "average"},
        {"ignore_labels": []},
        {"ignore_labels": ["O", "B-PER"], "aggregation_strategy": "simple"},
    ],
    ids=repr,
)
@pytest.mark.parametrize("inputs", [TEXTS[3], TEXTS], ids=["single", "batch"])
def test_token_classification(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-ner", "token-classification", inputs, **kwargs)
    assert_close(remote, local)


# ------------------------------------------------------------------------------ fill-mask

MASKED = ["paris is the [MASK] of france", "hello [MASK] world", "[MASK] lives in [MASK]"]


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"top_k": 2}, {"targets": ["paris", "london", "city"]}, {"targets": "city", "top_k": 3}],
    ids=repr,
)
@pytest.mark.parametrize("inputs", [MASKED[0], MASKED[2], MASKED], ids=["single", "two-masks", "batch"])
def test_fill_mask(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-mlm", "fill-mask", inputs, **kwargs)
    assert_close(remote, local)


# ------------------------------------------------------------------------------ feature-extraction


@pytest.mark.parametrize("kwargs", [{}, {"return_tensors": True}, {"truncation": True}], ids=repr)
@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS], ids=["single", "batch"])
def test_feature_extraction(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-encoder", "feature-extraction", inputs, **kwargs)
    assert_close(remote, local)


def test_feature_extraction_truncates_long_input(client: Client) -> None:
    long_text = " ".join(["paris"] * 300)
    remote, local = _both(client, "tiny-encoder", "feature-extraction", long_text, truncation=True)
    assert np.asarray(remote).shape == (1, 128, 32)
    assert_close(remote, local)


def _pooled(hidden: Any, pooling: str, normalize: bool) -> np.ndarray:
    tokens = np.asarray(hidden, dtype=np.float32)[0]
    vector = tokens[0] if pooling == "cls" else tokens.mean(axis=0)
    return vector / np.linalg.norm(vector) if normalize else vector


@pytest.mark.parametrize(
    ("pooling", "normalize"), [("mean", False), ("mean", True), ("cls", False), ("cls", True)]
)
def test_pooled_sentence_embeddings(client: Client, pooling: str, normalize: bool) -> None:
    remote = client.pipeline("feature-extraction", model="tiny-encoder")(
        TEXTS, pooling=pooling, normalize=normalize
    )
    local = local_pipeline("tiny-encoder")(TEXTS)
    assert_close(remote, [_pooled(h, pooling, normalize) for h in local])


def test_model_default_pooling_and_request_override(client: Client) -> None:
    pipe = client.pipeline("feature-extraction", model="tiny-encoder-pooled")
    local = local_pipeline("tiny-encoder")(TEXTS[0])
    embedding = pipe(TEXTS[0])
    assert embedding.shape == (32,) and float(np.linalg.norm(embedding)) == pytest.approx(1.0, abs=1e-5)
    assert_close(embedding, _pooled(local, "mean", True))
    assert_close(pipe(TEXTS[0], pooling="none"), local)


# ------------------------------------------------------------------------------ zero-shot-classification

LABELS = ["sport", "politics", "science"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"candidate_labels": LABELS},
        {"candidate_labels": "sport, politics"},
        {"candidate_labels": ["travel"]},
        {"candidate_labels": LABELS, "multi_label": True},
        {"candidate_labels": LABELS, "hypothesis_template": "this text is about {}."},
    ],
    ids=repr,
)
@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS], ids=["single", "batch"])
def test_zero_shot(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-nli", "zero-shot-classification", inputs, **kwargs)
    assert_close(remote, local)


def test_zero_shot_positional_labels(client: Client) -> None:
    remote, local = _both(client, "tiny-nli", "zero-shot-classification", TEXTS[1], LABELS)
    assert_close(remote, local)


# ------------------------------------------------------------------------------ text-generation

CHAT = [
    {"role": "system", "content": "you are good"},
    {"role": "user", "content": "what is the capital of france"},
]
PREFILL = [*CHAT, {"role": "assistant", "content": "the capital is"}]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"return_full_text": False},
        {"max_new_tokens": 5},
        {"repetition_penalty": 1.5},
        # "par" stops "hello world" after a few tokens (the tiny model's greedy text is known).
        {"stop_sequence": "par", "max_new_tokens": 20},
        {"stop_sequence": ["movie", "yo"], "max_new_tokens": 20},
    ],
    ids=repr,
)
@pytest.mark.parametrize(
    "inputs",
    ["hello world", CHAT, PREFILL, ["hello world", "the city"]],
    ids=["prompt", "chat", "prefill", "batch"],
)
def test_text_generation_greedy(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    remote, local = _both(client, "tiny-lm", "text-generation", inputs, **kwargs)
    assert_close(remote, local)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"do_sample": True, "temperature": 0.7, "seed": 3},
        {"do_sample": True, "top_k": 5, "top_p": 0.9, "seed": 11, "num_return_sequences": 2},
    ],
    ids=repr,
)
@pytest.mark.parametrize("inputs", ["hello world", CHAT], ids=["prompt", "chat"])
def test_text_generation_seeded_sampling(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    from transformers import set_seed

    remote = client.pipeline("text-generation", model="tiny-lm")(inputs, **kwargs)
    local_kwargs = dict(kwargs)
    set_seed(local_kwargs.pop("seed"))
    local = local_pipeline("tiny-lm")(inputs, **local_kwargs)
    assert_close(remote, local)
    # The same seed gives the same text again.
    assert remote == client.pipeline("text-generation", model="tiny-lm")(inputs, **kwargs)


@pytest.mark.parametrize("inputs", ["hello world", CHAT], ids=["prompt", "chat"])
@pytest.mark.parametrize(
    "kwargs", [{}, {"max_new_tokens": 20, "stop_sequence": "par"}, {"do_sample": True, "seed": 5}], ids=repr
)
def test_stream_yields_the_unary_text(client: Client, inputs: Any, kwargs: dict[str, Any]) -> None:
    pipe = client.pipeline("text-generation", model="tiny-lm")
    pieces = list(pipe.stream(inputs, **kwargs))
    assert len(pieces) > 1, "nothing was streamed piece by piece"
    unary = pipe(inputs, return_full_text=False, **kwargs)
    assert "".join(pieces) == unary[0]["generated_text"]


def test_stop_sequences_stop(client: Client) -> None:
    pipe = client.pipeline("text-generation", model="tiny-lm", return_full_text=False, max_new_tokens=20)
    full = pipe("hello world")[0]["generated_text"]
    stopped = pipe("hello world", stop_sequence="par")[0]["generated_text"]
    assert "par" in full and stopped.endswith("par") and len(stopped) < len(full)
    assert "".join(pipe.stream("hello world", stop_sequence="par")) == stopped


def test_stream_cancelled_midway_frees_the_model(client: Client) -> None:
    pipe = client.pipeline("text-generation", model="tiny-lm")
    stream = pipe.stream("hello world", max_new_tokens=200)
    next(stream)
    stream.close()  # cancels the call; the generation stops at the next token
    assert pipe("hello world", max_new_tokens=3) == local_pipeline("tiny-lm")("hello world", max_new_tokens=3)


# ------------------------------------------------------------------------------ batching never changes a result


@pytest.mark.parametrize(
    ("name", "task", "inputs", "kwargs"),
    [
        ("tiny-sentiment", "text-classification", TEXTS * 2, {"top_k": None}),
        ("tiny-ner", "token-classification", TEXTS * 2, {"aggregation_strategy": "simple"}),
        ("tiny-mlm", "fill-mask", MASKED * 2, {"top_k": 3}),
        ("tiny-encoder", "feature-extraction", TEXTS * 2, {}),
        ("tiny-nli", "zero-shot-classification", TEXTS * 2, {"candidate_labels": LABELS}),
        ("tiny-lm", "text-generation", ["hello world", "the city", "good movie", "hello world"] * 2, {}),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("tiny") else "",
)
def test_batching_never_changes_a_result(
    server: ServerThread, client: Client, name: str, task: str, inputs: list[Any], kwargs: dict[str, Any]
) -> None:
    """Concurrent requests of mixed lengths share batches, yet each equals its unbatched in-process result."""
    local = [local_pipeline(name)(x, **kwargs) for x in inputs]
    pipe = client.pipeline(task, model=name)
    until_batched(
        server,
        name,
        lambda: assert_close(concurrently(lambda x: pipe(x, **kwargs), inputs), local),
        len(inputs),
    )


def test_unbatched_model_gives_the_same_results(client: Client) -> None:
    batched = client.pipeline("text-classification", model="tiny-sentiment")(TEXTS, top_k=None)
    alone = client.pipeline("text-classification", model="tiny-sentiment-unbatched")(TEXTS, top_k=None)
    assert_close(batched, alone)


def test_long_lists_are_split_into_requests(client: Client) -> None:
    inputs = [f"{t} {i}" for i in range(5) for t in TEXTS]  # 20 inputs > the server's 16 per request
    pipe = client.pipeline(
        "text-classification", model="tiny-sentiment", inputs_per_request=6, max_in_flight=2
    )
    assert_close(pipe(inputs), local_pipeline("tiny-sentiment")(inputs))
    generated = pipe(iter(inputs[:5]))
    assert not isinstance(generated, list)
    assert_close(list(generated), local_pipeline("tiny-sentiment")(inputs[:5]))


# ------------------------------------------------------------------------------ generic call


@pytest.mark.parametrize(
    ("name", "task", "inputs", "kwargs"),
    [
        ("tiny-encoder", "feature-extraction", TEXTS[0], {}),
        ("tiny-encoder", "feature-extraction", TEXTS, {"return_tensors": True}),
        ("tiny-sentiment", "text-classification", TEXTS, {"top_k": 2}),
        ("tiny-ner", "token-classification", TEXTS[3], {"aggregation_strategy": "simple"}),
        ("tiny-lm", "text-generation", CHAT, {"max_new_tokens": 4}),
    ],
    ids=lambda v: v if isinstance(v, str) and v.startswith("tiny") else "",
)
def test_generic_call_equals_the_local_pipeline(
    client: Client, name: str, task: str, inputs: Any, kwargs: dict[str, Any]
) -> None:
    from pipelined.pipelines.generic import GenericPipeline

    remote = GenericPipeline(client, task, name)(inputs, **kwargs)
    local = local_pipeline(name)(inputs, **kwargs)
    if kwargs.get("return_tensors"):
        local = [t.numpy() for t in local]
    assert_close(remote, local)


def test_generic_values_round_trip(client: Client) -> None:
    from google.protobuf import struct_pb2
    from pipelined.pipelines.generic import ValueEncoder, decode
    from pipelined_server.tasks.generic_values import OutputEncoder, to_python

    value = {
        "a": 1,
        "b": 1.0,
        "c": 2.5,
        "d": (1, "x"),
        "e": np.arange(6, dtype=np.int16).reshape(2, 3),
        "f": b"\x00\x01",
        "g": [None, True, "s"],
        "h": np.float32(0.5),
    }
    encoder = ValueEncoder()
    wire = struct_pb2.Value()
    wire.CopyFrom(encoder.encode(value))
    server_side = to_python(wire, encoder.blobs, lambda data: data)
    out = OutputEncoder()
    back = decode(out.encode(server_side), out.blobs)
    assert back["a"] == 1 and type(back["a"]) is int
    assert back["b"] == 1.0 and type(back["b"]) is float
    assert back["c"] == 2.5 and back["d"] == (1, "x") and back["f"] == b"\x00\x01"
    assert back["g"] == [None, True, "s"] and back["h"] == 0.5
    assert back["e"].dtype == np.int16 and (back["e"] == value["e"]).all()


def test_tasks_without_a_typed_call_use_the_generic_call(client: Client) -> None:
    from pipelined import NotFound
    from pipelined.pipelines.generic import GenericPipeline

    pipe = client.pipeline("table-question-answering")
    assert isinstance(pipe, GenericPipeline)
    with pytest.raises(NotFound, match="table-question-answering"):
        pipe({"table": {"a": ["1"]}, "query": "what?"})


def test_models_report_accepted_parameters(client: Client) -> None:
    info = client.model("tiny-lm")
    assert {"seed", "stop_sequence", "temperature", "max_new_tokens"} <= set(info["accepted_parameters"])
    assert "pooling" in client.model("tiny-encoder")["accepted_parameters"]
