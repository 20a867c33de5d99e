"""GPU placement through a real server: cuda:N in float32/float16/bfloat16, 8-bit and 4-bit nf4 weights
through bitsandbytes, one copy per GPU (`devices`), and device auto split across GPUs. Each served result
equals the in-process pipeline loaded the same way, and ListModels reports the weights on each GPU.

Skipped, with the reason, where no CUDA GPU is present (bench/gpu_check.py runs the same checks in one
go, with timings and memory, on a machine lent a GPU)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from asr_specs import ASR, WHISPER_KWARGS
from harness import ServerThread
from pipelined import Client
from pipelined_server.config import ModelSpec, ServerConfig
from pipelined_server.loading import load_pipeline
from tiny_models import tiny_audio

torch = pytest.importorskip("torch")
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
pytestmark = pytest.mark.skipif(
    GPUS == 0, reason="no CUDA GPU on this machine (torch.cuda.is_available() is False)"
)
needs_two = pytest.mark.skipif(GPUS < 2, reason=f"needs 2 CUDA GPUs, this machine has {GPUS}")
needs_bnb = pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="bitsandbytes is not installed (the `gpu` extra)"
)

CASES = [
    pytest.param({"device": "cuda:0", "dtype": "float32"}, id="cuda0-float32"),
    pytest.param({"device": "cuda:0", "dtype": "float16"}, id="cuda0-float16"),
    pytest.param({"device": "cuda:0", "dtype": "bfloat16"}, id="cuda0-bfloat16"),
    pytest.param({"device": "cuda:0", "dtype": "int8"}, id="cuda0-int8", marks=needs_bnb),
    pytest.param({"device": "cuda:0", "dtype": "nf4"}, id="cuda0-nf4", marks=needs_bnb),
    pytest.param(
        {"devices": ("cuda:0", "cuda:1"), "dtype": "float16"}, id="devices-two-gpus", marks=needs_two
    ),
    # A 1 MB budget on the first GPU leaves most of the tiny model to the second: a real split.
    pytest.param(
        {"device": "auto", "max_memory": {"cuda:0": 1_000_000, "cuda:1": 10**9}},
        id="auto-two-gpus",
        marks=needs_two,
    ),
]


@pytest.fixture(scope="module")
def base_spec(tiny_whisper_dir: Path) -> ModelSpec:
    return ModelSpec(name="gpu", task=ASR, source=str(tiny_whisper_dir), pipeline_kwargs=WHISPER_KWARGS)


@pytest.fixture(params=CASES)
def served(request: pytest.FixtureRequest, base_spec: ModelSpec) -> Iterator[tuple[ServerThread, ModelSpec]]:
    spec = base_spec.model_copy(update=request.param)
    server = ServerThread(ServerConfig(host="127.0.0.1", port=0, metrics_port=0, models=(spec,)))
    yield server, spec
    server.stop()


def test_served_on_gpu_equals_the_same_in_process_load(served: tuple[ServerThread, ModelSpec]) -> None:
    server, spec = served
    info = Client(server.target).models()[0]
    assert info["state"] == "ready", info["error"]
    placed = spec.devices or ((spec.device,) if spec.device != "auto" else ("cuda:0", "cuda:1"))
    assert set(placed) <= set(info["weight_bytes"]), info["weight_bytes"]
    if spec.devices:
        assert info["replica_devices"] == list(spec.devices)
    if spec.device == "auto":
        assert set(info["device_map"].values()) == {"cuda:0", "cuda:1"}
    if spec.dtype in ("int8", "nf4"):
        assert info["dtype"] == spec.dtype
    local = load_pipeline(spec).pipeline  # with devices: the copy on the first one
    remote = Client(server.target, timeout=300).pipeline(ASR, model="gpu")
    for seed in (1, 2):
        audio = tiny_audio(4.0, seed=seed)
        # One input per call: a batch of several may take other GPU kernels (float16 sums in another order).
        assert remote(audio) == local(audio.copy())
    if spec.devices:  # every copy computes what the first does
        other = load_pipeline(spec, spec.devices[-1]).pipeline
        audio = tiny_audio(4.0, seed=3)
        assert other(audio.copy()) == local(audio.copy())
