"""Placement keys of a model (device/devices, max_memory, offload_folder, dtype): validated with the key
path named, and turned into the right transformers.pipeline() arguments. No model is loaded here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pipelined_server.config import parse_config
from pipelined_server.errors import ConfigError
from pipelined_server.loading import pipeline_kwargs_for
from pipelined_server.memory import checkpoint_bytes, parse_size


def spec_of(**model: Any) -> Any:
    return parse_config({"models": [{"name": "m", "source": "x", "task": "fill-mask", **model}]}).models[0]


@pytest.mark.parametrize(
    ("value", "size"),
    [(1024, 1024), ("2GiB", 2 * 2**30), ("500MB", 500 * 10**6), ("1.5 kib", 1536), ("7", 7)],
)
def test_sizes_in_accelerate_units(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        ({"max_memory": {"cpu": "lots"}}, "models[0].max_memory.cpu: expected a size"),
        ({"max_memory": {"cpu": 0}}, "models[0].max_memory.cpu: must be positive"),
        ({"max_memory": {"gpu0": "1GB"}}, "models[0].max_memory.gpu0"),
        ({"max_memory": []}, "models[0].max_memory: expected a mapping"),
        ({"max_memory": {"cuda:0": "1GB"}}, "models[0].max_memory: cuda:0 is not where this model is placed"),
        ({"offload_folder": "/tmp/x"}, "models[0].offload_folder: only device auto"),
        ({"dtype": "nf4"}, "models[0].dtype: nf4 (4-bit bitsandbytes) runs on CUDA only"),
        ({"dtype": "int4"}, "models[0].dtype: 'int4'"),
        ({"device": "cuda:0", "devices": ["cuda:1"]}, "models[0].devices: set device or devices, not both"),
        ({"devices": []}, "models[0].devices: expected a non-empty list"),
        ({"devices": ["cuda:0", "cuda:0"]}, "models[0].devices: a GPU listed twice"),
        ({"devices": ["auto"]}, "models[0].devices[0]: auto splits one copy"),
        ({"devices": ["cuda:0", "tpu"]}, "models[0].devices[1]: 'tpu' is not a device"),
        ({"device": "gpu"}, "models[0].device: 'gpu' is not a device"),
        ({"device": "auto", "replicas": 2}, "models[0].replicas: a model split by device auto runs one"),
    ],
)
def test_bad_placement_names_the_key(model: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spec_of(**model)
    assert needle in str(caught.value)


def test_auto_with_budgets_and_offload_folder_becomes_accelerate_arguments() -> None:
    spec = spec_of(device="auto", max_memory={"cuda:1": "1GiB", 0: "2GiB", "cpu": 1000}, offload_folder="/o")
    assert spec.max_memory == {"cuda:1": 2**30, "cuda:0": 2 * 2**30, "cpu": 1000}
    assert pipeline_kwargs_for(spec) == {
        "device_map": "auto",
        "model_kwargs": {"max_memory": {1: 2**30, 0: 2 * 2**30, "cpu": 1000}, "offload_folder": "/o"},
    }


def test_devices_place_one_copy_each_with_its_own_arguments() -> None:
    spec = spec_of(devices=["cuda:0", "cuda:1"], dtype="float16", max_memory={"cuda:1": "8GB"})
    assert spec.devices == ("cuda:0", "cuda:1") and spec.device == "cpu"
    assert pipeline_kwargs_for(spec, "cuda:1") == {"device": "cuda:1", "dtype": "float16"}
    assert spec_of(devices=["cpu", "cpu"]).devices == ("cpu", "cpu")  # CPU copies: one per NUMA node


def test_quantized_dtypes_by_device() -> None:
    cpu = pipeline_kwargs_for(spec_of(dtype="int8"))
    assert cpu == {"device": "cpu", "dtype": "float32"}  # quantized after loading, without bitsandbytes
    gpu = pipeline_kwargs_for(spec_of(dtype="int8", device="cuda:1"))
    assert gpu["device_map"] == "cuda:1" and gpu["model_kwargs"]["quantization_config"].load_in_8bit
    nf4 = pipeline_kwargs_for(spec_of(dtype="nf4", device="cuda:0"))["model_kwargs"]["quantization_config"]
    assert nf4.load_in_4bit and nf4.bnb_4bit_quant_type == "nf4"


def test_checkpoint_size_from_safetensors_headers_per_dtype(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file(
        {"w": torch.zeros(10, 10), "ids": torch.zeros(4, dtype=torch.int64)}, tmp_path / "m.safetensors"
    )
    assert checkpoint_bytes(tmp_path, "float32") == 400 + 32
    assert checkpoint_bytes(tmp_path, "bfloat16") == 200 + 32
    assert checkpoint_bytes(tmp_path, "nf4") == 50 + 32
    assert checkpoint_bytes(tmp_path, "auto") == 400 + 32
    assert checkpoint_bytes(tmp_path / "none", "auto") is None
