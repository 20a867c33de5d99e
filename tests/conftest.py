"""Shared fixtures: tiny random models built once per session, a server hosting them, shared data paths."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402

torch.set_num_threads(1)

from harness import ServerThread  # noqa: E402
from pipelined_server.config import BatchingConfig, ModelSpec, ServerConfig  # noqa: E402
from tiny_models import build_tiny_wav2vec2_ctc, build_tiny_whisper  # noqa: E402

ASR = "automatic-speech-recognition"
REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(relative: str) -> Path:
    """A file of ../shared/data, or a skip when the folder is absent (the project must work without it)."""
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder is not next to this checkout")
    return path


def shared_reference(relative: str) -> str:
    manifest = json.loads(shared_file("manifest.json").read_text())
    return next(entry["reference"] for entry in manifest if entry["file"] == relative)


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def tiny_ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wav2vec2_ctc(tmp_path_factory.mktemp("tiny-ctc"))


# Greedy decoding on the server and in-process alike, as the embedded models are configured.
WHISPER_KWARGS: dict[str, Any] = {"num_beams": 1}


def asr_specs(
    whisper_dir: Path, ctc_dir: Path, batching: BatchingConfig | None = None
) -> tuple[ModelSpec, ...]:
    batching = batching or BatchingConfig(max_batch_size=8, max_queue_delay_ms=20)
    return (
        ModelSpec(
            name="tiny-whisper",
            task=ASR,
            source=str(whisper_dir),
            pipeline_kwargs=WHISPER_KWARGS,
            batching=batching,
            default=True,
        ),
        ModelSpec(name="tiny-ctc", task=ASR, source=str(ctc_dir), batching=batching),
    )


@pytest.fixture(scope="session")
def asr_server(tiny_whisper_dir: Path, tiny_ctc_dir: Path) -> Iterator[ServerThread]:
    config = ServerConfig(
        host="127.0.0.1", port=0, metrics_port=0, models=asr_specs(tiny_whisper_dir, tiny_ctc_dir)
    )
    server = ServerThread(config)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_whisper(tiny_whisper_dir: Path) -> Any:
    import transformers

    return transformers.pipeline(ASR, model=str(tiny_whisper_dir), **WHISPER_KWARGS)


@pytest.fixture(scope="session")
def local_ctc(tiny_ctc_dir: Path) -> Any:
    import transformers

    return transformers.pipeline(ASR, model=str(tiny_ctc_dir))
