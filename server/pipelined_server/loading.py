"""Turns a ModelSpec into a transformers pipeline on its device: where the weights come from, device, dtype."""

from __future__ import annotations

import copy
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


def on_cuda(device: str) -> bool:
    """Whether a spec's device puts weights on CUDA GPUs ("auto" does when any GPU is visible)."""
    if device.startswith("cuda"):
        return True
    if device == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return False


def cpu_int8(spec: ModelSpec) -> bool:
    """`dtype: int8` off CUDA is torch's dynamic quantization of the linear layers (bitsandbytes' 8-bit
    kernels are CUDA only): the model loads in float32, then every nn.Linear becomes int8 weights with
    activations quantized per call."""
    return spec.dtype == "int8" and not on_cuda(spec.device)


def pipeline_kwargs_for(spec: ModelSpec) -> dict[str, Any]:
    """Keyword arguments of transformers.pipeline() for this spec: device placement and dtype."""
    kwargs: dict[str, Any] = dict(spec.pipeline_kwargs)
    if spec.device == "auto":
        kwargs["device_map"] = "auto"
    else:
        kwargs["device"] = spec.device
    if spec.dtype == "int8" and not cpu_int8(spec):
        from transformers import BitsAndBytesConfig

        model_kwargs = dict(kwargs.get("model_kwargs") or {})
        model_kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        kwargs["model_kwargs"] = model_kwargs
        if spec.device != "auto":
            kwargs.pop("device")
            kwargs["device_map"] = spec.device
    elif spec.dtype == "int8":
        kwargs["dtype"] = "float32"  # quantized after loading: see cpu_int8
    elif spec.dtype != "auto":
        kwargs["dtype"] = spec.dtype
    return kwargs


def quantize_linear_layers(model: Any) -> int:
    """Dynamic int8 quantization of every nn.Linear, in place; returns how many were quantized.

    torch.ao.quantization is deprecated in favour of torchao but still ships (torch 2.13) and needs no
    extra package; its warnings are silenced here so that they do not repeat at every start-up."""
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return sum(1 for m in model.modules() if isinstance(m, QuantizedLinear))


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
    if cpu_int8(spec):
        if device_map and set(map(str, device_map.values())) - {"cpu"}:
            raise ConfigError(
                f"{spec.name}: dtype int8 on CPU quantizes weights in memory; parts placed on "
                f"{sorted(set(map(str, device_map.values())) - {'cpu'})} cannot be (drop max_memory/offload)"
            )
        quantized = quantize_linear_layers(torch_model)
        log.info("%s: %d linear layers quantized to int8", spec.name, quantized)
        dtype = "int8"
    elif spec.dtype in ("int8", "nf4"):
        dtype = spec.dtype  # bitsandbytes: model.dtype reports the compute dtype, not the stored one
    return LoadedPipeline(pipeline=pipe, device=device, dtype=dtype)


def replicate(pipe: Any, count: int) -> list[Any]:
    """`count` pipelines over the same weights. Each gets its own tokenizer and processor copies: a Rust
    tokenizer's padding/truncation state is mutated per call and raises "Already borrowed" when shared
    across threads (a processor holds a tokenizer too)."""
    replicas = [pipe]
    for _ in range(count - 1):
        twin = copy.copy(pipe)
        processor = getattr(pipe, "processor", None)
        if processor is not None:
            twin.processor = copy.deepcopy(processor)
        if getattr(pipe, "tokenizer", None) is not None:
            shared = processor is not None and getattr(processor, "tokenizer", None) is pipe.tokenizer
            twin.tokenizer = twin.processor.tokenizer if shared else copy.deepcopy(pipe.tokenizer)
        replicas.append(twin)
    return replicas


def run_batch(pipe: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Runs one batch: the pipeline receives a list, so its own DataLoader batches the inputs."""
    call_kwargs = dict(kwargs)
    batch_size = max(len(inputs), int(call_kwargs.pop("batch_size", None) or 1))
    items = list(inputs)
    if getattr(pipe, "task", "") == "image-text-to-text" and isinstance(items[0], dict):
        # image-text-to-text reads a list of {"images", "text"} dicts as one chat; each dict alone goes to the
        # base Pipeline.__call__, so the base call with the list runs them as separate prompts.
        from transformers import Pipeline

        return list(Pipeline.__call__(pipe, items, batch_size=batch_size, **call_kwargs))
    outputs = pipe(items, batch_size=batch_size, **call_kwargs)
    if len(inputs) == 1 and _unwraps_one_item_lists(pipe):
        outputs = [outputs]
    return list(outputs)


def _unwraps_one_item_lists(pipe: Any) -> bool:
    """fill-mask returns the lone result, not a one-item list, when given a one-item list."""
    from transformers import FillMaskPipeline

    return isinstance(pipe, FillMaskPipeline)
