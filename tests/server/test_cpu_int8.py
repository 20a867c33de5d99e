"""`dtype: int8` on CPU: the model's linear layers run torch's dynamic int8 quantization (no bitsandbytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pipelined_server.config import ModelSpec
from pipelined_server.loading import load_pipeline, pipeline_kwargs_for


def test_int8_on_cpu_quantizes_every_linear_layer(tiny_whisper_dir: Path) -> None:
    spec = ModelSpec(
        name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir), dtype="int8"
    )
    assert "quantization_config" not in (pipeline_kwargs_for(spec).get("model_kwargs") or {})
    loaded = load_pipeline(spec)
    assert loaded.dtype == "int8"
    modules = list(loaded.pipeline.model.modules())
    quantized = [m for m in modules if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not [m for m in modules if type(m) is torch.nn.Linear]
    out = loaded.pipeline(np.zeros(16000, np.float32), return_timestamps="word")
    assert isinstance(out["text"], str)
