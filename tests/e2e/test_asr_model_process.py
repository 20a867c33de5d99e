"""Whisper in model processes (batching/model_process.py; `auto` with 2 replicas): unary results, a streamed
file (its calls run on the server's own copy, scheduler `here` calls) and a live stream (its decodes cross the
pipe) equal what the same server computes in process, and the in-process pipeline's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from asr_specs import ASR, asr_specs
from harness import ServerThread
from pacing import DecodePacedSource
from pipelined import Client
from pipelined_server.config import ServerConfig
from speech_clips import speech
from test_asr_parity import as_chunks, assert_same
from tiny_models import tiny_audio

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def server(tiny_whisper_dir: Path, tiny_ctc_dir: Path) -> Iterator[ServerThread]:
    whisper, ctc = asr_specs(tiny_whisper_dir, tiny_ctc_dir)
    models = (whisper.model_copy(update={"replicas": 2}), ctc)
    thread = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=models))
    yield thread
    thread.stop()


def test_two_replicas_of_whisper_run_in_processes_of_their_own(server: ServerThread) -> None:
    instance = server.app.state.registry.instances["tiny-whisper"]
    assert len(instance.processes) == 2 and all(p.pid for p in instance.processes)


@pytest.mark.parametrize(
    "kwargs", [{}, {"return_timestamps": "word"}, {"return_language": True}], ids=lambda k: repr(k)
)
def test_recognize_equals_the_in_process_pipeline(
    server: ServerThread, local_whisper: Any, kwargs: dict[str, Any]
) -> None:
    audio = tiny_audio(4.0, seed=1)
    remote = Client(server.target, timeout=300).pipeline(ASR, model="tiny-whisper")(audio, **kwargs)
    assert_same(remote, local_whisper(audio.copy(), **kwargs))


def test_a_streamed_file_equals_the_unary_long_form(server: ServerThread, local_whisper: Any) -> None:
    audio = tiny_audio(70.0, seed=70)
    pipe = Client(server.target, timeout=300).pipeline(ASR, model="tiny-whisper")
    unary = pipe(audio, return_timestamps=True)
    assert_same(unary, local_whisper(audio.copy(), return_timestamps=True))
    assert_same(as_chunks(list(pipe.stream_file(audio))), unary)


def _finals(target: str) -> list[tuple[str, float, float]]:
    source = DecodePacedSource(speech())
    finals = []
    pipe = Client(target, timeout=300).pipeline(ASR, model="tiny-whisper")
    for result in pipe.stream(source, interim_results=True, **source.options):
        source.observe(result)
        if result.is_final:
            finals.append((result.text, round(result.start or 0.0, 3), round(result.end or 0.0, 3)))
    return finals


def test_a_live_stream_equals_the_same_stream_computed_in_process(
    server: ServerThread, asr_server: ServerThread
) -> None:
    """Decode-paced, so both streams decode the same samples: the same final results."""
    calls = server.metric("pipelined_pipeline_calls_total", model="tiny-whisper")
    finals = _finals(server.target)
    assert finals and finals == _finals(asr_server.target)
    assert server.metric("pipelined_pipeline_calls_total", model="tiny-whisper") - calls >= len(finals)
