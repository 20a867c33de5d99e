"""`dtype: int8` on CPU: the model's linear layers run torch's dynamic int8 quantization (no bitsandbytes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pipelined_server.config import ModelSpec, embedded_spec
from pipelined_server.loading import dtype_on, load_pipeline, pipeline_kwargs_for


def _float_linears(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if type(m) is torch.nn.Linear]


def test_int8_on_cpu_quantizes_every_linear_layer(tiny_whisper_dir: Path) -> None:
    # With fast_vocab_projection off: every linear layer, the vocabulary projection included.
    spec = ModelSpec(
        name="w",
        task="automatic-speech-recognition",
        source=str(tiny_whisper_dir),
        dtype="int8",
        fast_vocab_projection=False,
    )
    assert "quantization_config" not in (pipeline_kwargs_for(spec).get("model_kwargs") or {})
    loaded = load_pipeline(spec)
    assert loaded.dtype == "int8"
    modules = list(loaded.pipeline.model.modules())
    quantized = [m for m in modules if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not _float_linears(loaded.pipeline.model)
    out = loaded.pipeline(np.zeros(16000, np.float32), return_timestamps="word")
    assert isinstance(out["text"], str)


def test_int8_whisper_leaves_its_vocabulary_projection_to_whisper_logits(tiny_whisper_dir: Path) -> None:
    # whisper_logits computes the projection in int8 and rescored in float32 (a model this small keeps
    # its float32 projection: too small to be worth it).
    spec = ModelSpec(
        name="w", task="automatic-speech-recognition", source=str(tiny_whisper_dir), dtype="int8"
    )
    loaded = load_pipeline(spec)
    assert _float_linears(loaded.pipeline.model) == ["proj_out"]
    assert isinstance(loaded.pipeline(np.zeros(16000, np.float32))["text"], str)


def test_auto_is_int8_for_the_embedded_tiny_en_on_a_cpu_only() -> None:
    tiny = embedded_spec("whisper-tiny.en")
    assert tiny.dtype == "auto" and dtype_on(tiny) == "int8"
    assert pipeline_kwargs_for(tiny)["dtype"] == "float32"  # loaded in float32, then quantized
    # An explicit dtype, another device, or a model without a catalogue choice: as configured.
    assert dtype_on(tiny.model_copy(update={"dtype": "float32"})) == "float32"
    assert dtype_on(tiny, "cuda:0") == "auto" and dtype_on(tiny, "auto") == "auto"
    assert dtype_on(embedded_spec("all-minilm-l6-v2")) == "auto"
    local = ModelSpec(name="w", task="automatic-speech-recognition", source="/models/whisper")
    assert dtype_on(local) == "auto"
