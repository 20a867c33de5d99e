"""What a model costs in memory: its weights' bytes per device, the process's resident memory, the size
of a checkpoint before loading it, and the units budgets are written in.

Nothing here imports torch at module level: the config and the budget check run before any model loads.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")

# Bytes per element of each safetensors dtype (a checkpoint's header says them without reading weights).
_SAFETENSORS_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip
# The fewest bytes per floating-point weight each configured dtype can leave (a lower bound: int8 on CPU
# quantizes only the linear layers, nf4 packs two weights per byte plus its scales).
_DTYPE_BYTES = {"float32": 4.0, "float16": 2.0, "bfloat16": 2.0, "int8": 1.0, "nf4": 0.5}


def parse_size(value: Any) -> int:
    """Bytes from an int or a string such as "512MB", "2GiB", "1.5GB" (accelerate's units); ValueError
    saying what is expected otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str) and (match := _SIZE.match(value)) and match[2].upper() in _UNITS:
        size = int(float(match[1]) * _UNITS[match[2].upper()])
    else:
        raise ValueError(f"expected a size such as 2GiB or 500MB, got {value!r}")
    if size <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return size


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def resident_bytes() -> int:
    """The process's resident set size now (Linux /proc; elsewhere the peak, from getrusage)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def weight_bytes_by_device(model: Any) -> dict[str, int]:
    """Bytes of a torch model's weights (parameters, buffers, packed int8 weights) per device.

    A weight that accelerate offloaded sits on the "meta" device; it is counted where the model's device
    map puts its module ("cpu" for weights kept in RAM by an offload hook, "disk" for the offload folder).
    Tied weights count once."""
    device_map: dict[str, Any] = dict(getattr(model, "hf_device_map", None) or {})
    totals: dict[str, int] = {}
    seen: set[int] = set()
    for name, tensor in _named_tensors(model):
        key = id(tensor) if tensor.device.type == "meta" else tensor.untyped_storage().data_ptr()
        if key in seen:
            continue
        seen.add(key)
        device = str(tensor.device)
        if tensor.device.type == "meta":
            device = _placement(name, device_map)
        totals[device] = totals.get(device, 0) + tensor.numel() * tensor.element_size()
    return dict(sorted(totals.items()))


def _named_tensors(model: Any) -> list[tuple[str, Any]]:
    """Parameters and buffers, plus the packed weights of dynamically quantized linear layers (these are
    neither: they live in a LinearPackedParams module and show only in the state dict)."""
    import torch

    tensors: list[tuple[str, Any]] = list(model.named_parameters(remove_duplicate=False))
    tensors += list(model.named_buffers(remove_duplicate=False))
    for module_name, module in model.named_modules():
        if type(module).__name__ == "LinearPackedParams":
            weight, bias = module._weight_bias()
            tensors += [(f"{module_name}.weight", weight)]
            if isinstance(bias, torch.Tensor):
                tensors += [(f"{module_name}.bias", bias)]
    return tensors


def _placement(name: str, device_map: dict[str, Any]) -> str:
    """The device map's entry for the longest module prefix of a weight's name."""
    parts = name.split(".")
    for end in range(len(parts), -1, -1):
        prefix = ".".join(parts[:end])
        if prefix in device_map:
            return device_name(device_map[prefix])
    return "meta"


def device_key(device: Any) -> str:
    """A device as budgets and reports name it ("cuda" and a GPU index become cuda:N), or '' if none."""
    if isinstance(device, int) and not isinstance(device, bool) and device >= 0:
        return f"cuda:{device}"
    name = str(device)
    if name in ("cuda", "xpu"):
        return f"{name}:0"
    return name if re.fullmatch(r"cpu|mps|(cuda|xpu):\d+", name) else ""


def device_name(place: Any) -> str:
    """accelerate's device map names GPUs by index; the rest of pipelined says cuda:N."""
    return f"cuda:{place}" if isinstance(place, int) else str(place)


def checkpoint_bytes(directory: Path, dtype: str) -> int | None:
    """A lower bound on the weights' bytes once loaded with `dtype`, read from the safetensors headers
    alone (no weight is read); None when the directory holds no safetensors checkpoint."""
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0.0
    for path in files:
        with path.open("rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(length))
        for key, entry in header.items():
            if key == "__metadata__":
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            stored = _SAFETENSORS_BYTES.get(entry["dtype"], 4)
            floating = entry["dtype"] in ("F64", "F32", "F16", "BF16")
            total += count * (_DTYPE_BYTES.get(dtype, stored) if floating else stored)
    return int(total)
