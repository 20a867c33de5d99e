"""The generic call on tasks that have no typed call (table-question-answering), and on binary inputs and
outputs sent through it explicitly: remote result == in-process pipeline result on the same tiny model,
input and arguments."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tiny_vision_models as tiny
from harness import ServerThread
from pipelined import Client, InvalidArgument, PermissionDenied
from pipelined.aio import Client as AioClient
from pipelined.pipelines.generic import Audio, GenericPipeline
from pipelined_server.config import ModelSpec, ServerConfig
from test_vision_tasks import assert_same
from text_fixtures import assert_close
from tiny_generic_models import build_tiny_tapas, build_tiny_videomae, write_tiny_video
from tiny_models import tiny_audio

TQA = "table-question-answering"
BUILDERS = {
    TQA: build_tiny_tapas,
    "image-classification": tiny.build_tiny_image_classifier,
    "depth-estimation": tiny.build_tiny_depth_estimator,
    "audio-classification": tiny.build_tiny_audio_classifier,
    "video-classification": build_tiny_videomae,
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {task: build(tmp_path_factory.mktemp(task)) for task, build in BUILDERS.items()}


@pytest.fixture(scope="module")
def server(model_dirs: dict[str, Path]) -> Iterator[ServerThread]:
    specs = tuple(ModelSpec(name=task, task=task, source=str(path)) for task, path in model_dirs.items())
    thread = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=specs))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[Client]:
    with Client(server.target, timeout=120) as client:
        yield client


_LOCAL: dict[str, Any] = {}


@pytest.fixture(scope="module")
def local(model_dirs: dict[str, Path]) -> Any:
    import transformers

    # The task is a runtime string, so none of transformers' per-task overloads applies.
    make_pipeline: Any = transformers.pipeline

    def get(task: str) -> Any:
        if task not in _LOCAL:
            _LOCAL[task] = make_pipeline(task, model=str(model_dirs[task]))
        return _LOCAL[task]

    return get


# ------------------------------------------------------------------------------ table-question-answering

# Columns deliberately not in sorted order: the wire must keep a table's column order.
TABLE = {
    "movies": ["87", "53", "69"],
    "actors": ["brad pitt", "leonardo di caprio", "george clooney"],
    "age": ["56", "45", "59"],
}
QUERIES = ["how old is brad pitt", "how many movies", "what age", "who is old"]

TQA_INPUTS: dict[str, Any] = {
    "one query": {"table": TABLE, "query": QUERIES[0]},
    "a list of queries": {"table": TABLE, "query": QUERIES},
    "a list of inputs": [{"table": TABLE, "query": q} for q in QUERIES[:2]],
}
TQA_KWARGS: list[dict[str, Any]] = [
    {},
    {"sequential": True},
    {"padding": "max_length"},
    {"padding": "longest", "truncation": "drop_rows_to_fit"},
    {"truncation": True, "sequential": False},
]


def _fresh(inputs: Any) -> Any:
    """A deep copy: the local pipeline replaces each input's table by a DataFrame in place."""
    if isinstance(inputs, list):
        return [_fresh(item) for item in inputs]
    return {"table": {k: list(v) for k, v in inputs["table"].items()}, "query": inputs["query"]}


def test_dict_key_order_survives_the_wire() -> None:
    """A Struct is a map: serialized, its keys come back in any order. Columns are a table's order."""
    from pipelined.pipelines.generic import ValueEncoder, decode
    from pipelined.v1 import generic_pb2
    from pipelined_server.tasks.generic_values import OutputEncoder, to_python

    value = {
        "table": {"zeta": ["1"], "actors": ["a"], "movies": ["2"], "b": ["x"]},
        "query": "q",
        "a": {},
        "l": [],
    }
    encoder = ValueEncoder()
    request = generic_pb2.RunRequest(inputs=encoder.encode(value))
    wire = generic_pb2.RunRequest.FromString(request.SerializeToString())
    server_side = to_python(wire.inputs, encoder.blobs, lambda data: data)
    assert list(server_side) == list(value) and list(server_side["table"]) == list(value["table"])
    out = OutputEncoder()
    response = generic_pb2.RunResponse(outputs=out.encode(server_side))
    back = decode(generic_pb2.RunResponse.FromString(response.SerializeToString()).outputs, out.blobs)
    assert back == value and list(back["table"]) == list(value["table"]) and list(back) == list(value)


def test_a_bad_key_order_is_invalid_argument(client: Client) -> None:
    request = GenericPipeline(client, TQA, TQA).build_request({"table": TABLE, "query": QUERIES[0]}, {})
    order = request.inputs.struct_value.fields["table"].struct_value.fields["$keys"].list_value
    order.values.pop()
    with pytest.raises(grpc.RpcError) as caught:
        client.generic.Run(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "$keys" in caught.value.details()


@pytest.mark.parametrize("kwargs", TQA_KWARGS, ids=repr)
@pytest.mark.parametrize("inputs", list(TQA_INPUTS.values()), ids=list(TQA_INPUTS))
def test_table_question_answering(client: Client, local: Any, inputs: Any, kwargs: dict[str, Any]) -> None:
    pipe = client.pipeline(TQA, model=TQA)
    assert isinstance(pipe, GenericPipeline)
    remote = pipe(_fresh(inputs), **kwargs)
    # Coordinates are tuples in-process, and must come back as tuples, not lists.
    assert_close(remote, local(TQA)(_fresh(inputs), **kwargs))


def test_table_question_answering_model_is_not_degenerate(local: Any) -> None:
    """The parity checks mean something only if answers differ by query and by mode, with aggregators
    (sequential mode feeds each answer into the next query; batch mode answers each query alone)."""
    batch = local(TQA)(_fresh(TQA_INPUTS["a list of queries"]))
    sequential = local(TQA)(_fresh(TQA_INPUTS["a list of queries"]), sequential=True)
    assert len({r["answer"] for r in sequential}) > 1
    assert [r["answer"] for r in batch] != [r["answer"] for r in sequential]
    assert all("aggregator" in r for r in batch)


def test_table_question_answering_defaults_and_overrides(client: Client, local: Any) -> None:
    pipe = client.pipeline(TQA, model=TQA, sequential=True)
    inputs = TQA_INPUTS["a list of queries"]
    assert_close(pipe(_fresh(inputs)), local(TQA)(_fresh(inputs), sequential=True))
    assert_close(pipe(_fresh(inputs), sequential=False), local(TQA)(_fresh(inputs)))


def test_table_question_answering_pipeline_errors_are_invalid_argument(client: Client) -> None:
    pipe = client.pipeline(TQA, model=TQA)
    with pytest.raises(InvalidArgument, match="query is empty"):
        pipe({"table": TABLE, "query": ""})
    with pytest.raises(InvalidArgument, match="table is empty"):
        pipe({"table": {}, "query": "what age"})  # an empty dict arrives as a dict, not as null
    assert pipe({"table": TABLE, "query": QUERIES[0]})["answer"]  # still serving


async def test_table_question_answering_asyncio(server: ServerThread, local: Any) -> None:
    inputs = TQA_INPUTS["a list of queries"]
    async with AioClient(server.target, timeout=120) as aio:
        remote = await aio.pipeline(TQA, model=TQA)(_fresh(inputs), sequential=True)
    assert_close(remote, local(TQA)(_fresh(inputs), sequential=True))


# ------------------------------------------------------------------------------ binary parts


IMAGES = [tiny.tiny_image(i, size) for i, size in enumerate([(40, 30), (25, 50)])]


def test_image_inputs_decode_on_the_server(client: Client, local: Any) -> None:
    task = "image-classification"
    pipe = GenericPipeline(client, task, task)
    assert_same(pipe(IMAGES[0], top_k=2), local(task)(IMAGES[0], top_k=2))
    assert_same(pipe(IMAGES), local(task)(IMAGES))
    # An image as a keyword argument: the pipeline's `inputs=` form.
    assert_same(pipe(inputs=IMAGES[1]), local(task)(IMAGES[1]))


def test_image_and_tensor_outputs_decode_on_the_client(client: Client, local: Any) -> None:
    task = "depth-estimation"
    pipe = GenericPipeline(client, task, task)
    remote = pipe(IMAGES[0])
    expected = local(task)(IMAGES[0])
    assert isinstance(remote["predicted_depth"], np.ndarray)
    assert type(remote["depth"]).__module__.startswith("PIL.")
    assert_same(remote, expected)
    assert_same(pipe(IMAGES), local(task)(IMAGES))


def _wav(samples: np.ndarray, rate: int = tiny.AUDIO_RATE) -> bytes:
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="FLOAT")
    return buffer.getvalue()


CLIPS = [tiny_audio(seconds, seed=60 + i) for i, seconds in enumerate([1.0, 0.7])]


def test_audio_inputs_decode_on_the_server(client: Client, local: Any) -> None:
    task = "audio-classification"
    pipe = GenericPipeline(client, task, task)
    expected = local(task)(CLIPS[0], top_k=2)
    # An encoded file ($audio, decoded at the model's rate), a raw array ($ndarray) and the pipeline's dict.
    assert_same(pipe(Audio(_wav(CLIPS[0])), top_k=2), expected)
    assert_same(pipe(CLIPS[0], top_k=2), expected)
    assert_same(pipe({"raw": CLIPS[0], "sampling_rate": tiny.AUDIO_RATE}, top_k=2), expected)
    assert_same(pipe([Audio(_wav(clip)) for clip in CLIPS]), local(task)(CLIPS))


def test_bad_binary_parts_are_invalid_argument(client: Client, local: Any) -> None:
    with pytest.raises(InvalidArgument, match="could not decode the audio"):
        GenericPipeline(client, "audio-classification", "audio-classification")(Audio(b"not audio at all"))
    pipe = GenericPipeline(client, "image-classification", "image-classification")
    request = pipe.build_request(IMAGES[0], {})
    request.blobs["in0"] = b"not an image"
    with pytest.raises(grpc.RpcError) as caught:
        client.generic.Run(request, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a readable image" in caught.value.details()
    assert_same(pipe(IMAGES[0]), local("image-classification")(IMAGES[0]))  # still serving, and right


# ------------------------------------------------------------------------------ video-classification


def test_server_side_paths_and_urls_are_refused(client: Client, tmp_path: Path) -> None:
    """video-classification's pipeline takes only a path or URL, so over the generic call a client could make
    the server read its files or fetch other hosts: both are refused, and the server keeps serving."""
    task = "video-classification"
    clip = str(write_tiny_video(tmp_path / "clip.mp4", seed=0))
    pipe = client.pipeline(task, model=task)
    assert isinstance(pipe, GenericPipeline)
    with pytest.raises(InvalidArgument, match="does not read files on the server"):
        pipe(clip)
    with pytest.raises(PermissionDenied, match="does not fetch"):
        pipe("http://169.254.169.254/latest/meta-data")
    with pytest.raises(InvalidArgument, match="does not read files"):
        GenericPipeline(client, "image-classification", "image-classification")("/etc/passwd")
