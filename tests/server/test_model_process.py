"""Models in processes of their own (batching/model_process.py): when `auto` turns them on, that the batches
computed there equal the in-process pipeline's unbatched results, that errors keep their status, that a
child that dies fails only the batch it held (UNAVAILABLE) and is replaced, and that no child outlives the
server that started it."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from harness import free_port, wait_for
from model_cache import cached_model
from pipelined.v1 import generic_pb2, text_pb2
from pipelined_server.batching.model_process import (
    AUTO_MAX_WEIGHT_BYTES,
    INLINE_UNPICKLE_BYTES,
    ModelProcessDied,
    enabled,
)
from pipelined_server.config import ModelSpec, parse_config
from pipelined_server.errors import ConfigError, InvalidInput
from pipelined_server.tasks import generic, text_classification
from serving import Serving, echo, hold, in_process, spec
from tiny_text_models import build_tiny_bert

pytestmark = pytest.mark.timeout(180)

TASK = "text-classification"
MODEL = "tiny-sentiment"
TEXTS = ["the movie was great", "awful", "a long and winding road to nowhere in particular", "ok"]


@functools.cache
def model_dir() -> Path:
    return cached_model(build_tiny_bert, head="sequence")


def served(**kwargs: Any) -> Serving:
    return Serving([spec(MODEL, TASK, model_dir(), **kwargs)])


def request(*texts: str) -> text_pb2.ClassifyTextRequest:
    return text_pb2.ClassifyTextRequest(
        model=MODEL, inputs=[text_pb2.TextPairInput(text=t) for t in texts], all_labels=True
    )


def labels(response: text_pb2.ClassifyTextResponse) -> list[list[tuple[str, float]]]:
    return [[(s.label, round(s.score, 5)) for s in r.labels] for r in response.results]


def local_labels(text: str) -> list[tuple[str, float]]:
    return [(s["label"], round(s["score"], 5)) for s in in_process(TASK, model_dir())(text, top_k=None)]


def test_auto_is_on_for_small_cpu_models_of_the_supported_tasks_with_a_core_to_spare() -> None:
    text = ModelSpec(name="a", task=TASK, source="x")
    assert enabled(text, 10_000_000, cores=2)
    assert not enabled(text, 10_000_000, cores=1)  # nothing to gain: the pipe only adds work
    assert not enabled(text, AUTO_MAX_WEIGHT_BYTES + 1, cores=2)  # the weights would be held twice
    assert not enabled(ModelSpec(name="a", task=TASK, source="x", device="cuda"), 1, cores=2)
    assert not enabled(ModelSpec(name="a", task="text-generation", source="x"), 1, cores=2)
    # Speech recognition, with several replicas (their threads would share one GIL); one replica stays.
    asr = ModelSpec(name="a", task="automatic-speech-recognition", source="x")
    assert enabled(asr.model_copy(update={"replicas": 2}), 1, cores=2)
    assert not enabled(asr, 1, cores=2)
    assert enabled(asr.model_copy(update={"model_process": True}), 1, cores=2)
    assert not enabled(ModelSpec(name="a", task=TASK, source="x", model_process=False), 1, cores=2)
    assert enabled(ModelSpec(name="a", task=TASK, source="x", model_process=True), 1, cores=1)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        ({"task": "text-generation"}, "a model process serves only these tasks"),
        ({"task": TASK, "device": "cuda"}, "runs on the CPU only"),
        ({"task": TASK, "model_process": "always"}, "model_process"),
    ],
)
def test_model_process_errors_name_the_key(model: dict[str, Any], message: str) -> None:
    document = {"models": [{"name": "a", "source": "x", "model_process": True, **model}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(document)
    assert "models[0].model_process" in str(caught.value)
    assert message in str(caught.value)


def test_batches_computed_in_the_model_process_equal_the_in_process_pipeline() -> None:
    async def scenario() -> None:
        async with served() as serving:
            instance = serving.registry.find(MODEL)
            assert [p.pid for p in instance.processes] != [] and os.getpid() not in [
                p.pid for p in instance.processes
            ]
            run = await serving.concurrently(
                MODEL, text_classification.ADAPTER, [request(t) for t in TEXTS], items=len(TEXTS)
            )
            assert run.batches == {4: 1} and run.pipeline_calls == 1  # one batch of 4, computed once
            assert [labels(r)[0] for r in run.responses] == [local_labels(t) for t in TEXTS]

    asyncio.run(scenario())


def test_model_process_false_keeps_the_pipeline_in_the_server_process() -> None:
    async def scenario() -> None:
        async with served(model_process=False) as serving:
            assert serving.registry.find(MODEL).processes == []
            response = await serving.call(text_classification.ADAPTER, request(*TEXTS))
            assert labels(response) == [local_labels(t) for t in TEXTS]

    asyncio.run(scenario())


def test_a_pipeline_argument_error_in_the_model_process_is_invalid_input() -> None:
    async def scenario() -> None:
        async with served() as serving:
            scheduler = serving.registry.find(MODEL).scheduler
            assert scheduler is not None
            with pytest.raises(InvalidInput, match="sideways is not a valid TruncationStrategy"):
                await scheduler.submit("hello", {"truncation": "sideways"})
            # The child serves on.
            response = await serving.call(text_classification.ADAPTER, request("hello"))
            assert labels(response) == [local_labels("hello")]

    asyncio.run(scenario())


def test_large_requests_and_replies_cross_the_pipe_whole() -> None:
    """The event loop reads the child's answers as they arrive: many reads for one message, and replies over
    INLINE_UNPICKLE_BYTES unpickled on a thread, with the same result."""

    async def scenario() -> None:
        async with served() as serving:
            scheduler = serving.registry.find(MODEL).scheduler
            assert scheduler is not None
            blob = os.urandom(3 * INLINE_UNPICKLE_BYTES)
            assert await scheduler.submit_call(functools.partial(echo, blob)) == blob
            long_text = "the movie was great " * 20_000  # 400 kB, truncated by the tokenizer
            got = await scheduler.submit(long_text, {"truncation": True, "top_k": None})
            want = in_process(TASK, model_dir())(long_text, truncation=True, top_k=None)
            assert [(s["label"], round(s["score"], 5)) for s in got] == [
                (s["label"], round(s["score"], 5)) for s in want
            ]
            assert await scheduler.submit_call(functools.partial(echo, "small")) == "small"

    asyncio.run(scenario())


def test_the_generic_call_runs_in_the_model_process() -> None:
    async def scenario() -> None:
        async with served() as serving:
            run = generic_pb2.RunRequest(task=TASK, model=MODEL)
            run.inputs.string_value = "the movie was great"
            response = await serving.call(generic.ADAPTER, run)
            got = response.outputs.list_value.values[0].struct_value.fields
            want = in_process(TASK, model_dir())("the movie was great")[0]
            assert got["label"].string_value == want["label"]
            assert got["score"].number_value == pytest.approx(want["score"], rel=1e-5)

    asyncio.run(scenario())


def test_a_model_process_that_dies_fails_its_batch_with_unavailable_and_is_replaced() -> None:
    async def scenario() -> None:
        async with served() as serving:
            instance = serving.registry.find(MODEL)
            scheduler = instance.scheduler
            assert scheduler is not None
            first = instance.processes[0].pid
            assert first is not None
            marks = Path(tempfile.mkdtemp(prefix="hold-"))
            held = asyncio.ensure_future(
                scheduler.submit_call(functools.partial(hold, marks / "held", marks / "release"))
            )
            await asyncio.to_thread(wait_for, (marks / "held").exists, 60, "the hold")
            os.kill(first, signal.SIGKILL)
            with pytest.raises(ModelProcessDied) as died:
                await held
            assert died.value.code.name == "UNAVAILABLE" and "retry" in died.value.message
            response = await serving.call(text_classification.ADAPTER, request("hello"))
            assert labels(response) == [local_labels("hello")]
            assert instance.processes[0].pid not in (None, first)

    asyncio.run(scenario())


def test_closing_the_registry_ends_its_model_processes() -> None:
    async def scenario() -> list[Any]:
        async with served() as serving:
            return list(serving.registry.find(MODEL).processes)

    processes = asyncio.run(scenario())
    assert processes and not any(p._process.is_alive() for p in processes)


def _descendants(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found |= {int(child)} | _descendants(int(child))
    return found


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads the process tree from Linux /proc")
def test_no_model_process_outlives_a_killed_server(tmp_path: Path) -> None:
    """SIGKILL gives the server no chance to close anything: its children read EOF and end by themselves."""
    config = tmp_path / "c.yaml"
    config.write_text(f"models:\n  - name: {MODEL}\n    task: {TASK}\n    source: {model_dir()}\n")
    command = [sys.executable, "-m", "pipelined_server.cli", "--host", "127.0.0.1", "--workers", "1"]
    command += ["--port", str(free_port()), "--metrics-port", "0", "--config", str(config)]
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: "model processes" in (tmp_path / "server.log").read_text(), 120, "the model process")
        children = _descendants(server.pid)
        assert children, "the server started no process"
        server.kill()
        server.wait()
        wait_for(lambda: not any(Path(f"/proc/{c}").exists() for c in children), 30, "the children to end")
    finally:
        if server.poll() is None:
            server.kill()
        log.close()
