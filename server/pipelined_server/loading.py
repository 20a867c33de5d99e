"""Turns a ModelSpec into a transformers pipeline on its device: where the weights come from, device, dtype."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ModelSpec
from .errors import ConfigError
from .quantization import quantize_linear_layers
from .tasks import (
    whisper_alignatt,
    whisper_attention,
    whisper_context,
    whisper_logits,
    whisper_prefix,
    whisper_processors,
)

log = logging.getLogger(__name__)

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class LoadedPipeline:
    pipeline: Any
    # Where it runs: "cpu", "cuda:0", or for a model split by device auto "auto (cpu, disk)".
    device: str
    dtype: str
    # Bytes of its weights per device ("disk": offloaded to the offload folder).
    weight_bytes: dict[str, int] = field(default_factory=dict)
    # Module -> device of a model split by accelerate (its hf_device_map), in model order; empty when whole.
    placements: tuple[tuple[str, str], ...] = ()


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
    """Whether a device puts weights on CUDA GPUs ("auto" does when any GPU is visible)."""
    if device.startswith("cuda"):
        return True
    if device == "auto":
        import torch

        return bool(torch.cuda.is_available())
    return False


def dtype_on(spec: ModelSpec, device: str | None = None) -> str:
    """The dtype the spec loads with on `device` (its own by default): `auto` on a plain CPU device is the
    embedded catalogue's choice for the model where it has one (Whisper tiny.en: int8), else `auto`."""
    from .sources.embedded import cpu_dtype

    device = device or spec.device
    if spec.dtype == "auto" and device.startswith("cpu") and spec.source.startswith(EMBEDDED_PREFIX):
        return cpu_dtype(spec.source[len(EMBEDDED_PREFIX) :]) or "auto"
    return spec.dtype


def cpu_int8(spec: ModelSpec, device: str | None = None) -> bool:
    """`dtype: int8` off CUDA is torch's dynamic quantization of the linear layers (bitsandbytes' 8-bit
    kernels are CUDA only): the model loads in float32, then every nn.Linear becomes int8 weights with
    activations quantized per call."""
    return dtype_on(spec, device) == "int8" and not on_cuda(device or spec.device)


def _accelerate_max_memory(max_memory: dict[str, int]) -> dict[int | str, int]:
    """accelerate names GPUs by index: {"cuda:1": n} becomes {1: n}."""
    return {int(k.split(":")[1]) if k.startswith("cuda:") else k: v for k, v in max_memory.items()}


def _bitsandbytes_config(dtype: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if dtype == "nf4":
        # bfloat16 compute where the GPU has it (Ampere and later), else float16: QLoRA's defaults.
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def pipeline_kwargs_for(spec: ModelSpec, device: str | None = None) -> dict[str, Any]:
    """Keyword arguments of transformers.pipeline() for this spec on `device` (its own by default; one of
    its `devices` for a replica): device placement, memory budgets, offload and dtype."""
    device = device or spec.device
    kwargs: dict[str, Any] = dict(spec.pipeline_kwargs)
    model_kwargs: dict[str, Any] = dict(kwargs.get("model_kwargs") or {})
    if device == "auto":
        kwargs["device_map"] = "auto"
        if spec.max_memory:
            model_kwargs["max_memory"] = _accelerate_max_memory(spec.max_memory)
        if spec.offload_folder:
            model_kwargs["offload_folder"] = spec.offload_folder
    else:
        kwargs["device"] = device
    dtype = dtype_on(spec, device)
    if dtype in ("int8", "nf4") and not cpu_int8(spec, device):
        model_kwargs["quantization_config"] = _bitsandbytes_config(dtype)
        if device != "auto":
            kwargs.pop("device")
            kwargs["device_map"] = device
    elif dtype == "int8":
        kwargs["dtype"] = "float32"  # quantized after loading: see cpu_int8
    elif dtype != "auto":
        kwargs["dtype"] = dtype
    if model_kwargs:
        kwargs["model_kwargs"] = model_kwargs
    return kwargs


# CPU flags of native half-precision arithmetic; without them torch converts to float32 per operation.
_NATIVE_CPU_FLAGS = {"bfloat16": ("avx512_bf16", "amx_bf16"), "float16": ("avx512_fp16", "amx_fp16")}


def check_cpu_dtype(dtype: str, where: str) -> None:
    """Refuses a half dtype this CPU's torch cannot compute (a matmul and a convolution are tried), and
    warns where it is only emulated: on this AVX2 CPU Whisper tiny.en took 1.8-3.4x float32's time per clip
    in float16 or bfloat16 (bench/dtypes.py, two runs on a loaded machine)."""
    import torch

    if dtype not in _NATIVE_CPU_FLAGS:
        return
    kind = getattr(torch, dtype)
    try:
        x = torch.ones(1, 4, 8, dtype=kind)
        torch.nn.functional.conv1d(x, torch.ones(4, 4, 3, dtype=kind))
        (x[0] @ x[0].T).sum().item()
    except RuntimeError as exc:
        raise ConfigError(f"{where}: this CPU's torch cannot compute {dtype}: {exc}") from exc
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return
    if not any(flag in flags for flag in _NATIVE_CPU_FLAGS[dtype]):
        log.warning(
            "%s: this CPU has no native %s arithmetic; torch emulates it (slower than float32)", where, dtype
        )


def load_pipeline(spec: ModelSpec, device: str | None = None) -> LoadedPipeline:
    """Loads the pipeline on `device` (the spec's own by default) (blocking: call it off the event loop)."""
    import transformers

    from .memory import device_name, weight_bytes_by_device

    device = device or spec.device
    model = resolve_source(spec.source)
    log.info("loading %s (%s) from %s on %s", spec.name, spec.task, model, device)
    wanted = dtype_on(spec, device)
    if not on_cuda(device):
        check_cpu_dtype(wanted, f"{spec.name}.dtype")
    # The task is a runtime string, so none of transformers' per-task overloads applies.
    make_pipeline: Any = transformers.pipeline
    pipe = make_pipeline(spec.task, model=model, **pipeline_kwargs_for(spec, device))
    torch_model = getattr(pipe, "model", None)
    device_map = dict(getattr(torch_model, "hf_device_map", None) or {})
    placements = tuple((module, device_name(place)) for module, place in device_map.items())
    split = sorted({place for _, place in placements}, key=[p for _, p in placements].index)
    summary = (
        f"auto ({', '.join(split)})" if device == "auto" and split else str(getattr(pipe, "device", device))
    )
    dtype = str(getattr(torch_model, "dtype", "")).removeprefix("torch.")
    if cpu_int8(spec, device):
        if set(split) - {"cpu"}:
            raise ConfigError(
                f"{spec.name}: dtype int8 on CPU quantizes the weights in memory; parts placed on "
                f"{', '.join(sorted(set(split) - {'cpu'}))} cannot be (drop max_memory / offload_folder)"
            )
        # Whisper's vocabulary projection stays float32 here, for whisper_logits below: it computes it in
        # int8 too but scores the best candidates and every special token (timestamps, languages) again in
        # float32, so timestamps and language detection do not rest on int8 scores.
        whisper = getattr(pipe, "type", "") == "seq2seq_whisper" and spec.fast_vocab_projection
        quantized = quantize_linear_layers(torch_model, frozenset({"proj_out"}) if whisper else frozenset())
        log.info("%s: %d linear layers quantized to int8", spec.name, quantized)
        dtype = "int8"
    elif wanted in ("int8", "nf4"):
        dtype = wanted  # bitsandbytes: model.dtype reports the compute dtype, not the stored one
    if getattr(pipe, "type", "") == "seq2seq_whisper":
        whisper_context.install(torch_model)
        whisper_alignatt.install(torch_model)
        whisper_prefix.install(torch_model)
        whisper_processors.install(torch_model)
        whisper_attention.install(torch_model)
        if spec.fast_vocab_projection:
            whisper_logits.install(torch_model)
    weights = weight_bytes_by_device(torch_model) if torch_model is not None else {}
    return LoadedPipeline(pipe, device=summary, dtype=dtype, weight_bytes=weights, placements=placements)


def load_replicas(spec: ModelSpec) -> list[LoadedPipeline]:
    """One loaded copy per device of `devices` (or the one `device`), one after another."""
    return [load_pipeline(spec, device) for device in spec.devices or (spec.device,)]


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


# Tasks whose __call__ hands a list unchanged to Pipeline.__call__, which hands each input to preprocess ->
# forward -> postprocess. A lone input of these runs that chain directly, and a batch runs the chain that
# Pipeline.__call__ builds for a list, fed from a list instead of a torch DataLoader (`_run_many`). The
# DataLoader costs the same at every batch: measured on the peers' tiny text classifier (2 loaded cores, p10
# of 600 interleaved calls), a one-item list took 4.86 ms and the direct chain 2.59 ms, the same as the local
# pipeline's single call (2.64 ms), with equal outputs; batches: see `_run_many`.
_DIRECT_TASKS = frozenset({"text-classification", "feature-extraction", "fill-mask"})


def run_batch(pipe: Any, inputs: Sequence[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Runs one batch: what the pipeline returns for the list of inputs, batched as its own list call batches."""
    call_kwargs = dict(kwargs)
    batch_size = max(len(inputs), int(call_kwargs.pop("batch_size", None) or 1))
    # Live-stream decodes ask for Whisper's encoder over their window only (None: the full 30 s window).
    # Their interim decodes also stop short of the audio's end (AlignAtt), and re-decodes start with the
    # words already final (a forced prefix).
    margin_s = call_kwargs.pop(whisper_context.KWARG, None)
    stop_s = call_kwargs.pop(whisper_alignatt.KWARG, None)
    prefix = whisper_prefix.prefix_ids(
        getattr(pipe, "tokenizer", None), call_kwargs.pop(whisper_prefix.KWARG, None)
    )
    with whisper_context.trimmed(margin_s), whisper_alignatt.stopping(stop_s), whisper_prefix.forcing(prefix):
        return _run_batch(pipe, list(inputs), batch_size, call_kwargs)


def _run_batch(pipe: Any, items: list[Any], batch_size: int, call_kwargs: dict[str, Any]) -> list[Any]:
    if getattr(pipe, "task", "") in _DIRECT_TASKS:
        if len(items) == 1:
            return [_run_one(pipe, items[0], call_kwargs)]
        return _run_many(pipe, items, batch_size, call_kwargs)
    if getattr(pipe, "task", "") == "image-text-to-text" and isinstance(items[0], dict):
        # image-text-to-text reads a list of {"images", "text"} dicts as one chat; each dict alone goes to the
        # base Pipeline.__call__, so the base call with the list runs them as separate prompts.
        from transformers import Pipeline

        return list(Pipeline.__call__(pipe, items, batch_size=batch_size, **call_kwargs))
    outputs = pipe(items, batch_size=batch_size, **call_kwargs)
    if len(items) == 1 and _unwraps_one_item_lists(pipe):
        outputs = [outputs]
    return list(outputs)


def _run_one(pipe: Any, item: Any, kwargs: dict[str, Any]) -> Any:
    """What one element of `pipe([item], **kwargs)` would be, without the DataLoader (Pipeline.__call__'s own
    parameter handling, then its single-input path)."""
    preprocess, forward, postprocess = pipe._sanitize_parameters(**kwargs)
    return pipe.run_single(
        item,
        {**pipe._preprocess_params, **preprocess},
        {**pipe._forward_params, **forward},
        {**pipe._postprocess_params, **postprocess},
    )


def _run_many(pipe: Any, items: list[Any], batch_size: int, kwargs: dict[str, Any]) -> list[Any]:
    """What `pipe(items, batch_size=batch_size, **kwargs)` returns, without the DataLoader: the iterators of
    Pipeline.get_iterator (transformers' own collate, forward and unbatching), fed the collated batches from a
    list. The DataLoader yields exactly these batches (in order, no workers); only its set-up per call is
    gone: 0.3-0.6 ms per batch, a tenth of a batch of the peers' tiny text classifier (batches of 2, 4 and 8:
    median 3.63 against 4.04 ms, 5.05 against 5.56, 8.19 against 8.78; `bench/batch_path.py`, 1,500 calls
    each way, interleaved, loaded 2-core machine) and within the noise of all-MiniLM-L6-v2's 25-83 ms; equal
    outputs. `bench/unary_peers.py` could not tell it at c=8 and c=32 (two interleaved rounds: within ±4%)."""
    from transformers.pipelines.base import pad_collate_fn
    from transformers.pipelines.pt_utils import PipelineIterator

    preprocess, forward, postprocess = pipe._sanitize_parameters(**kwargs)
    preprocess = {**pipe._preprocess_params, **preprocess}
    processed = [pipe.preprocess(item, **preprocess) for item in items]
    extractor = pipe.feature_extractor if pipe.feature_extractor is not None else pipe.image_processor
    collate = pad_collate_fn(pipe.tokenizer, extractor)  # get_iterator's for batch_size > 1 (run_batch's)
    batches = [collate(processed[i : i + batch_size]) for i in range(0, len(processed), batch_size)]
    model_outputs = PipelineIterator(
        batches, pipe.forward, {**pipe._forward_params, **forward}, loader_batch_size=batch_size
    )
    return list(
        PipelineIterator(model_outputs, pipe.postprocess, {**pipe._postprocess_params, **postprocess})
    )


def _unwraps_one_item_lists(pipe: Any) -> bool:
    """fill-mask returns the lone result, not a one-item list, when given a one-item list."""
    from transformers import FillMaskPipeline

    return isinstance(pipe, FillMaskPipeline)
