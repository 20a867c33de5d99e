"""Tiny text models, the in-process pipelines on them, and one server hosting them all, built once per
test session (cached here rather than in conftest.py, so several test modules can share them)."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

from harness import ServerThread  # noqa: E402
from pipelined_server.config import BatchingConfig, InputLimits, ModelSpec, ServerConfig  # noqa: E402
from tiny_text_models import build_tiny_bert, build_tiny_causal_lm  # noqa: E402

# Model name on the test server -> (task, tiny model directory key).
MODELS: dict[str, tuple[str, str]] = {
    "tiny-sentiment": ("text-classification", "sequence"),
    "tiny-ner": ("token-classification", "token"),
    "tiny-mlm": ("fill-mask", "masked"),
    "tiny-encoder": ("feature-extraction", "base"),
    "tiny-nli": ("zero-shot-classification", "nli"),
    "tiny-lm": ("text-generation", "lm"),
}
# Test limits: small enough to exceed cheaply.
LIMITS = InputLimits(max_text_chars=2000, max_batch_inputs=16)
BATCHING = BatchingConfig(max_batch_size=8, max_queue_delay_ms=20)


@functools.cache
def tiny_text_dirs() -> dict[str, Path]:
    root = Path(tempfile.mkdtemp(prefix="tiny-text-"))
    atexit.register(shutil.rmtree, root, True)
    dirs = {
        head: build_tiny_bert(root / head, head) for head in ("sequence", "token", "masked", "base", "nli")
    }
    dirs["lm"] = build_tiny_causal_lm(root / "lm")
    return dirs


def text_specs() -> tuple[ModelSpec, ...]:
    dirs = tiny_text_dirs()
    specs = [
        ModelSpec(name=n, task=t, source=str(dirs[d]), batching=BATCHING) for n, (t, d) in MODELS.items()
    ]
    specs.append(
        ModelSpec(
            name="tiny-encoder-pooled",
            task="feature-extraction",
            source=str(dirs["base"]),
            batching=BATCHING,
            request_defaults={"pooling": "mean", "normalize": True},
        )
    )
    specs.append(
        ModelSpec(
            name="tiny-sentiment-unbatched",
            task="text-classification",
            source=str(dirs["sequence"]),
            batching=BatchingConfig(max_batch_size=1),
        )
    )
    return tuple(specs)


@functools.cache
def text_server() -> ServerThread:
    config = ServerConfig(host="127.0.0.1", port=0, metrics_port=0, inputs=LIMITS, models=text_specs())
    server = ServerThread(config)
    atexit.register(server.stop)
    return server


@functools.cache
def local_pipeline(name: str) -> Any:
    import transformers

    task, key = MODELS[name]
    return transformers.pipeline(task, model=str(tiny_text_dirs()[key]))


def assert_close(remote: Any, local: Any, path: str = "result") -> None:
    """Same structure, keys, strings and ints; floats equal to float32 rounding of batched matmuls."""
    if hasattr(local, "detach"):
        local = local.detach().numpy()
    if isinstance(local, np.ndarray):
        assert isinstance(remote, np.ndarray), f"{path}: expected an array, got {type(remote).__name__}"
        assert remote.shape == local.shape, f"{path}: shape {remote.shape} != {local.shape}"
        np.testing.assert_allclose(remote, local, rtol=1e-4, atol=1e-5, err_msg=path)
        return
    if isinstance(local, dict):
        assert isinstance(remote, dict) and remote.keys() == local.keys(), f"{path}: {remote} != {local}"
        for key in local:
            assert_close(remote[key], local[key], f"{path}.{key}")
        return
    if isinstance(local, list | tuple):
        assert type(remote) is type(local), f"{path}: {type(remote).__name__} != {type(local).__name__}"
        assert len(remote) == len(local), f"{path}: {len(remote)} items != {len(local)}"
        for i, (r, item) in enumerate(zip(remote, local, strict=True)):
            assert_close(r, item, f"{path}[{i}]")
        return
    if isinstance(local, float | np.floating):
        assert isinstance(remote, float), f"{path}: {remote!r} is not a Python float"
        assert remote == pytest.approx(float(local), rel=1e-4, abs=1e-5), path
        return
    assert remote == local, f"{path}: {remote!r} != {local!r}"
    assert type(remote) is type(local) or isinstance(local, np.integer), (
        f"{path}: type {type(remote)} != {type(local)}"
    )
