"""Bad text requests answer INVALID_ARGUMENT with a clear message, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from harness import ServerThread
from pipelined import Client, InvalidArgument
from pipelined.v1 import common_pb2, text_pb2
from text_fixtures import LIMITS, local_pipeline, text_server


@pytest.fixture(scope="module")
def server() -> ServerThread:
    return text_server()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=120)


def _status(call: Any, request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=60)
    return caught.value


@pytest.mark.parametrize(
    ("rpc", "request_", "needle"),
    [
        (
            "ClassifyText",
            text_pb2.ClassifyTextRequest(
                model="tiny-sentiment",
                inputs=[text_pb2.TextPairInput(text="x" * (LIMITS.max_text_chars + 1))],
            ),
            "limits.max_text_chars",
        ),
        (
            "ClassifyText",
            text_pb2.ClassifyTextRequest(
                model="tiny-sentiment",
                inputs=[text_pb2.TextPairInput(text="a", text_pair="x" * (LIMITS.max_text_chars + 1))],
            ),
            "inputs[0].text_pair",
        ),
        (
            "ClassifyText",
            text_pb2.ClassifyTextRequest(
                model="tiny-sentiment",
                inputs=[text_pb2.TextPairInput(text="a")] * (LIMITS.max_inputs_per_request + 1),
            ),
            "limits.max_inputs_per_request",
        ),
        ("ClassifyText", text_pb2.ClassifyTextRequest(model="tiny-sentiment"), "inputs is empty"),
        (
            "ClassifyText",
            text_pb2.ClassifyTextRequest(
                model="tiny-sentiment", inputs=[text_pb2.TextPairInput(text="a")], function_to_apply=99
            ),
            "function_to_apply",
        ),
        (
            "ClassifyText",
            text_pb2.ClassifyTextRequest(
                model="tiny-sentiment", inputs=[text_pb2.TextPairInput(text="a")], top_k=0
            ),
            "top_k",
        ),
        (
            "ClassifyTokens",
            text_pb2.ClassifyTokensRequest(model="tiny-ner", inputs=["a"], aggregation_strategy=42),
            "aggregation_strategy",
        ),
        (
            "ClassifyTokens",
            text_pb2.ClassifyTokensRequest(model="tiny-ner", inputs=["a"] * 17),
            "limits.max_inputs_per_request",
        ),
        ("FillMask", text_pb2.FillMaskRequest(model="tiny-mlm", inputs=["no mask here"]), "[MASK]"),
        ("FillMask", text_pb2.FillMaskRequest(model="tiny-mlm", inputs=["a [MASK]"], top_k=-1), "top_k"),
        (
            "ExtractFeatures",
            text_pb2.ExtractFeaturesRequest(model="tiny-encoder", inputs=["a"], normalize=True),
            "normalize needs pooling",
        ),
        (
            "ExtractFeatures",
            text_pb2.ExtractFeaturesRequest(model="tiny-encoder", inputs=["a"], pooling=7),
            "pooling",
        ),
        (
            "ExtractFeatures",
            text_pb2.ExtractFeaturesRequest(model="tiny-encoder", inputs=[" ".join(["paris"] * 200)]),
            "truncation",
        ),
        (
            "ClassifyZeroShot",
            text_pb2.ClassifyZeroShotRequest(model="tiny-nli", inputs=["a"]),
            "candidate_labels",
        ),
        (
            "ClassifyZeroShot",
            text_pb2.ClassifyZeroShotRequest(
                model="tiny-nli", inputs=["a"], candidate_labels=["x"], hypothesis_template="no slot"
            ),
            "hypothesis_template",
        ),
        (
            "GenerateText",
            text_pb2.GenerateTextRequest(model="tiny-lm", inputs=[text_pb2.GenerationInput()]),
            "set a prompt or a chat",
        ),
        (
            "GenerateText",
            text_pb2.GenerateTextRequest(
                model="tiny-lm",
                inputs=[text_pb2.GenerationInput(prompt="a")],
                parameters=text_pb2.GenerationParameters(decoding=common_pb2.DecodingOptions(temperature=-1)),
            ),
            "temperature",
        ),
        (
            "GenerateText",
            text_pb2.GenerateTextRequest(
                model="tiny-lm",
                inputs=[text_pb2.GenerationInput(prompt="a")],
                parameters=text_pb2.GenerationParameters(decoding=common_pb2.DecodingOptions(top_p=1.5)),
            ),
            "top_p",
        ),
        (
            "GenerateText",
            text_pb2.GenerateTextRequest(
                model="tiny-lm",
                inputs=[
                    text_pb2.GenerationInput(
                        chat=text_pb2.Chat(messages=[text_pb2.ChatMessage(role="robot", content="hi")])
                    )
                ],
            ),
            "role",
        ),
        (
            "GenerateText",
            text_pb2.GenerateTextRequest(
                model="tiny-lm",
                inputs=[
                    text_pb2.GenerationInput(
                        chat=text_pb2.Chat(
                            messages=[
                                text_pb2.ChatMessage(role="user", content="x" * (LIMITS.max_text_chars + 1))
                            ]
                        )
                    )
                ],
            ),
            "max_text_chars",
        ),
        (
            "StreamGenerateText",
            text_pb2.StreamGenerateTextRequest(
                model="tiny-lm", input=text_pb2.GenerationInput(prompt="x" * (LIMITS.max_text_chars + 1))
            ),
            "max_text_chars",
        ),
        (
            "StreamGenerateText",
            text_pb2.StreamGenerateTextRequest(
                model="tiny-lm",
                input=text_pb2.GenerationInput(prompt="a"),
                parameters=text_pb2.GenerationParameters(
                    decoding=common_pb2.DecodingOptions(max_new_tokens=0)
                ),
            ),
            "max_new_tokens",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and not v.startswith(("x", "inputs")) else None,
)
def test_bad_requests_are_invalid_argument(client: Client, rpc: str, request_: Any, needle: str) -> None:
    method = getattr(client.text, rpc)
    if rpc.startswith("Stream"):

        def call(request: Any, timeout: float) -> Any:
            return list(method(request, timeout=timeout))
    else:
        call = method
    error = _status(call, request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert needle in error.details()
    # The server keeps serving.
    assert client.pipeline("text-classification", model="tiny-sentiment")("hello") == local_pipeline(
        "tiny-sentiment"
    )("hello")


def test_generic_limits_and_bad_blobs(client: Client) -> None:
    from pipelined.pipelines.generic import GenericPipeline
    from pipelined.v1 import generic_pb2

    pipe = GenericPipeline(client, "feature-extraction", "tiny-encoder")
    with pytest.raises(InvalidArgument, match="max_text_chars"):
        pipe("x" * (LIMITS.max_text_chars + 1))
    with pytest.raises(InvalidArgument, match="limits.max_inputs_per_request"):
        pipe(["a"] * (LIMITS.max_inputs_per_request + 1))
    request = pipe.build_request({"$image": "missing"}, {})
    with pytest.raises(grpc.RpcError) as caught:
        client.generic.Run(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "missing" in caught.value.details()
    with pytest.raises(grpc.RpcError) as caught:
        client.generic.Run(generic_pb2.RunRequest(model="tiny-encoder"), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sdk_rejects_unknown_arguments_before_sending(client: Client) -> None:
    with pytest.raises(TypeError, match="bogus"):
        client.pipeline("text-classification", model="tiny-sentiment", bogus=1)
    with pytest.raises(TypeError, match="num_beams"):
        client.pipeline("text-generation", model="tiny-lm")("hi", num_beams=2)
    with pytest.raises(ValueError, match="function_to_apply"):
        client.pipeline("text-classification", model="tiny-sentiment")("hi", function_to_apply="relu")
    with pytest.raises(ValueError, match="pooling"):
        client.pipeline("feature-extraction", model="tiny-encoder")("hi", pooling="max")


def test_pipeline_errors_are_invalid_argument(client: Client) -> None:
    # Greedy search cannot return two sequences: transformers raises ValueError, the caller sees why.
    with pytest.raises(InvalidArgument, match="num_return_sequences"):
        client.pipeline("text-generation", model="tiny-lm")("hi", num_return_sequences=2)


def test_cli_run(client: Client, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from pipelined.cli import main

    with pytest.raises(SystemExit) as exited:
        main(
            [
                "--target",
                client.target,
                "run",
                "text-classification",
                "hello world",
                "good movie",
                "--model",
                "tiny-sentiment",
                "--param",
                "top_k=2",
            ]
        )
    assert exited.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line) for line in lines] == [
        client.pipeline("text-classification", model="tiny-sentiment")(t, top_k=2)
        for t in ("hello world", "good movie")
    ]
    with pytest.raises(SystemExit):
        main(
            [
                "--target",
                client.target,
                "run",
                "text-generation",
                "hello world",
                "--model",
                "tiny-lm",
                "--stream",
                "--param",
                "max_new_tokens=5",
            ]
        )
    streamed = capsys.readouterr().out
    unary = client.pipeline("text-generation", model="tiny-lm")(
        "hello world", max_new_tokens=5, return_full_text=False
    )
    assert streamed == unary[0]["generated_text"] + "\n"
