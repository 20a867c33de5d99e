"""Shared fixtures: tiny random models built once per session, a server hosting them, shared data paths."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Servers the tests start as subprocesses run one process each, so their pid, memory and signals are the
# server's own; tests/e2e/test_workers.py covers several workers.
os.environ.setdefault("PIPELINED_WORKERS", "1")

import sys  # noqa: E402

# Fixture modules (tiny model builders, the server harness, paths) live in tests/fixtures, one place for every suite.
sys.path.insert(0, str(Path(__file__).resolve().parent / "fixtures"))

import torch  # noqa: E402

torch.set_num_threads(1)

from asr_specs import ASR, WHISPER_KWARGS, asr_specs  # noqa: E402,F401
from harness import ServerThread  # noqa: E402
from paths import REPO, SHARED_DATA, shared_file, shared_reference  # noqa: E402,F401
from pipelined_server.config import ServerConfig  # noqa: E402
from tiny_models import build_tiny_wav2vec2_ctc, build_tiny_whisper  # noqa: E402


@pytest.fixture(scope="session")
def tiny_whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


@pytest.fixture(scope="session")
def tiny_ctc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_wav2vec2_ctc(tmp_path_factory.mktemp("tiny-ctc"))


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
