"""Every typed pipeline by task name, transformers' task aliases, and `make_pipeline` (what
`Client.pipeline(task)` dispatches on): the generic call for every task without a typed one."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from . import audio, generation, multimodal, speech, text, vision
from .base import RemotePipeline, Stubs
from .generic import GenericPipeline

PIPELINES: dict[str, type[RemotePipeline]] = {
    speech.SpeechRecognitionPipeline.task: speech.SpeechRecognitionPipeline,
    **text.PIPELINES,
    generation.TextGenerationPipeline.task: generation.TextGenerationPipeline,
    **vision.PIPELINES,
    **multimodal.PIPELINES,
    **audio.PIPELINES,
}
# transformers' task aliases.
ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}


# Placement and loading arguments of `transformers.pipeline()`: on the service the server's configuration
# decides them, so `Client.pipeline()` accepts them, checks them against what the model reports in
# ListModels, and warns (or, for a strict client, raises) on a mismatch.
PLACEMENT = ("device", "device_map", "torch_dtype", "dtype", "model_kwargs", "trust_remote_code", "revision")

# (task, model) -> the served model's `model_dict` (the named model, or the task's default when model is
# None).
Lookup = Callable[[str | None, str | None], dict[str, Any]]


def split_placement(defaults: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    placement = {k: defaults[k] for k in PLACEMENT if k in defaults}
    rest = {k: v for k, v in defaults.items() if k not in PLACEMENT}
    return placement, rest


def _device_string(device: Any) -> str:
    if isinstance(device, bool):
        return str(device)
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return str(device)  # "cpu", "cuda", "cuda:1", "mps", a torch.device


def _dtype_string(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")  # "float16", torch.float16, "auto"


def _device_matches(wanted: str, served: str) -> bool:
    if wanted == served:
        return True
    # "cuda" means the default accelerator of that kind; "cuda:0" is what the server reports for it.
    return ":" not in wanted and served.split(":")[0] == wanted


def placement_mismatches(info: dict[str, Any], placement: dict[str, Any]) -> list[str]:
    """The placement/loading arguments that the served model does not match, each as `name=value`."""
    placement = dict(placement)
    model_kwargs = dict(placement.pop("model_kwargs", None) or {})
    for key in ("device_map", "torch_dtype", "dtype"):  # transformers reads these from model_kwargs too
        if key in model_kwargs:
            placement.setdefault(key, model_kwargs.pop(key))
    served_device, served_dtype = info.get("device", ""), info.get("dtype", "")
    wrong: list[str] = []
    for key, value in placement.items():
        if value is None or (key == "trust_remote_code" and value is False):
            continue
        if key == "device":
            ok = _device_matches(_device_string(value), served_device)
        elif key == "device_map":
            # "auto": the server's own device map, or an accelerator; a CPU-only model does not match.
            ok = (value == "auto" and served_device != "cpu") or str(value) == served_device
        elif key in ("torch_dtype", "dtype"):
            ok = value == "auto" or _dtype_string(value) == served_dtype
        else:  # trust_remote_code, revision: loading happens on the server, nothing to compare with
            ok = False
        if not ok:
            wrong.append(f"{key}={value!r}")
    wrong.extend(f"model_kwargs[{k!r}]={v!r}" for k, v in model_kwargs.items())
    return wrong


def check_placement(info: dict[str, Any], placement: dict[str, Any], strict: bool) -> None:
    wrong = placement_mismatches(info, placement)
    if not wrong:
        return
    message = (
        f"{', '.join(wrong)} ignored: model {info.get('name')!r} ({info.get('task')}) is served on device "
        f"{info.get('device')!r} with dtype {info.get('dtype')!r} from {info.get('source')!r}; placement "
        "and loading are the server's configuration (see its models config)"
    )
    if strict:
        raise ValueError(message)
    warnings.warn(message, UserWarning, stacklevel=4)


def resolve(
    task: str | None, model: str | None, defaults: dict[str, Any], lookup: Lookup, strict: bool = False
) -> tuple[str, dict[str, Any]]:
    """The task (the served model's, when only a model is named, as transformers infers it) and the call
    defaults left once the placement arguments are checked against the served model."""
    if task is None and model is None:
        raise TypeError("pipeline() needs a task, a model, or both")
    placement, rest = split_placement(defaults)
    if task is None or placement:
        info = lookup(task, model)
        task = task or info["task"]
        if placement:
            check_placement(info, placement, strict)
    return task, rest


def make_pipeline(client: Stubs, task: str, model: str | None, defaults: dict[str, Any]) -> RemotePipeline:
    """A typed pipeline for tasks with a typed call; the generic call for every other task."""
    task = ALIASES.get(task, task)
    if task in PIPELINES:
        return PIPELINES[task](client, model, **defaults)
    return GenericPipeline(client, task, model, **defaults)
