"""Turns a ModelSpec into a transformers pipeline on its device: where the weights come from, device, dtype."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelSpec
from .errors import ConfigError

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Any
    device: str
    dtype: str


def resolve_source(source: str) -> str:
    """An embedded name becomes its materialised local directory; a local path must exist; else a Hub id."""
    if source.startswith(EMBEDDED_PREFIX):
        from .sources.embedded import materialize

        return str(materialize(source[len(EMBEDDED_PREFIX) :]))
    path = Path(source).expanduser()
    if path.exists():
        return str(path)
    if source.startswith(("/", ".", "~")):
        raise ConfigError(f"model source {source!r} is not an existing directory")
    return source  # a Hub id: transformers downloads it (or finds it in the HF cache when offline)


def pipeline_kwargs_for(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments of transformers.pipeline() for this spec: device placement and dtype."""
    kwargs: dict[str, Any] = dict(spec.pipeline_kwargs)
    if spec.device == "auto":
        kwargs["device_map"] = "auto"
    else:
        kwargs["device"] = spec.device
    if spec.dtype == "int8":
        from transformers import BitsAndBytesConfig

        model_kwargs = dict(kwargs.get("model_kwargs") or {})
        model_kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["model_kwargs"] = model_kwargs
        if spec.device != "auto":
            kwargs.pop("device")
            kwargs["device_map"] = spec.device
    elif spec.dtype != "auto":
        kwargs["dtype"] = spec.dtype
    return kwargs


def load_pipeline(spec: ModelSpec) -> LoadedPipeline:
    """Loads the pipeline (blocking: call it off the event loop)."""
    import transformers

    model = resolve_source(spec.source)
    log.info("loading %s (%s) from %s on %s", spec.name, spec.task, model, spec.device)
    # The task is a runtime string, so none of transformers' per-task overloads applies.
    make_pipeline: Any = transformers.pipeline
    pipe = make_pipeline(spec.task, model=model, **pipeline_kwargs_for(spec))
    torch_model = getattr(pipe, "model", None)
    device_map = getattr(torch_model, "hf_device_map", None)
    device = str(device_map) if device_map else str(getattr(pipe, "device", spec.device))
    dtype = str(getattr(torch_model, "dtype", "")).removeprefix("torch.")
    return LoadedPipeline(pipeline=pipe, device=device, dtype=dtype)


def run_batch(pipe: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Runs one batch: the pipeline receives a list, so its own DataLoader batches the inputs."""
    call_kwargs = dict(kwargs)
    batch_size = max(len(inputs), int(call_kwargs.pop("batch_size", None) or 1))
    outputs = pipe(list(inputs), batch_size=batch_size, **call_kwargs)
    return list(outputs)
