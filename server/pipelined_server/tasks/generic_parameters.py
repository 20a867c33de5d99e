"""What a generic call may pass to its pipeline: a per-task allow-list of parameters, with the work they ask
for bounded (checks.py).

An allow-list, not a deny-list: `pipe(x, **parameters)` reaches DataLoader and model options that a
network caller must not set. Measured (issue 10): `num_workers: 4` made the server fork four copies of
itself (+1.75 GiB). Names come from each pipeline's `_sanitize_parameters` in this transformers version;
anything else answers INVALID_ARGUMENT naming the allowed ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import InputLimits
from ..errors import InvalidInput
from .checks import (
    bounded_int,
    check_batch_size,
    check_chunking,
    check_generation,
    check_labels,
    check_template,
)
from .parameters import PARAMETERS

# generate() options a caller may set, in `generate_kwargs` or (generation tasks) at the top level.
GENERATE = frozenset(
    {
        "max_new_tokens",
        "min_new_tokens",
        "num_beams",
        "num_return_sequences",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "length_penalty",
        "early_stopping",
        "language",
        "task",
        "guidance_scale",
    }
)
# Dict-valued parameters whose keys are generate() options.
_GENERATE_DICTS = ("generate_kwargs", "forward_params")
_EVERY_TASK = frozenset({"batch_size"})
_GENERATION_TASKS = ("text-generation", "image-text-to-text", "any-to-any", "text-to-audio")

_EXTRA: dict[str, set[str]] = {
    "automatic-speech-recognition": {"generate_kwargs"},
    "feature-extraction": {"tokenize_kwargs"},
    "fill-mask": {"tokenizer_kwargs"},
    "text-classification": {"truncation", "padding", "max_length"},
    "token-classification": {"stride"},
    "text-generation": {
        "generate_kwargs",
        "return_tensors",
        "return_text",
        "clean_up_tokenization_spaces",
        "prefix",
        "continue_final_message",
        "add_special_tokens",
    },
    "image-text-to-text": {"generate_kwargs", "return_full_text", "text", "images"},
    "any-to-any": {"generate_kwargs", "return_full_text", "text", "images", "continue_final_message"},
    "text-to-audio": {"generate_kwargs", "forward_params"},
    "document-question-answering": {"question", "doc_stride", "max_question_len", "max_seq_len", "lang"},
    "table-question-answering": {"sequential", "padding", "truncation", "table", "query"},
    "video-classification": {"top_k", "function_to_apply", "num_frames", "frame_sampling_rate"},
    "mask-generation": {
        "points_per_batch",
        "pred_iou_thresh",
        "stability_score_thresh",
        "stability_score_offset",
        "mask_threshold",
        "max_hole_area",
        "min_region_size",
        "output_bboxes_mask",
        "output_rle_mask",
    },
    "keypoint-matching": {"threshold"},
}


def allowed_parameters(task: str) -> frozenset[str]:
    names = set(PARAMETERS.get(task, [])) | _EXTRA.get(task, set()) | _EVERY_TASK
    if task in _GENERATION_TASKS:
        names |= GENERATE
    # pipelined's own options of the typed calls mean nothing to the pipeline itself.
    return frozenset(names - {"seed", "pooling", "normalize"})


def check_parameter_names(names: list[str], task: str) -> None:
    """Refuses, before anything is decoded, a parameter the task does not allow."""
    allowed = allowed_parameters(task)
    refused = sorted(set(names) - allowed)
    if refused:
        raise InvalidInput(
            f"parameter(s) {', '.join(refused)} are not accepted by the generic {task!r} call; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def check_parameters(parameters: Mapping[str, Any], task: str, limits: InputLimits) -> None:
    """Names allowed, and the work they ask for within the server's limits."""
    check_parameter_names(list(parameters), task)
    check_generation(parameters, limits)
    for name in _GENERATE_DICTS:
        if name in parameters:
            _check_generate_dict(parameters[name], name, limits)
    if "batch_size" in parameters:
        check_batch_size(parameters["batch_size"], limits)
    if "points_per_batch" in parameters:
        check_batch_size(parameters["points_per_batch"], limits, "points_per_batch")
    if "num_frames" in parameters:
        bounded_int(parameters["num_frames"], "max_batch_size", limits.max_batch_size, "num_frames")
    if "candidate_labels" in parameters:
        labels = parameters["candidate_labels"]
        check_labels(labels if isinstance(labels, list) else str(labels).split(","), limits)
    if "hypothesis_template" in parameters:
        check_template(parameters["hypothesis_template"])
    if "chunk_length_s" in parameters and parameters["chunk_length_s"]:
        check_chunking(parameters["chunk_length_s"], parameters.get("stride_length_s"), limits)
    elif parameters.get("stride_length_s"):
        raise InvalidInput("stride_length_s needs chunk_length_s")


def _check_generate_dict(value: Any, name: str, limits: InputLimits) -> None:
    if not isinstance(value, dict):
        raise InvalidInput(f"{name} must be an object of generate() options")
    refused = sorted(set(value) - GENERATE)
    if refused:
        raise InvalidInput(
            f"{name}: option(s) {', '.join(refused)} are not accepted; allowed: {', '.join(sorted(GENERATE))}"
        )
    check_generation(value, limits, f"{name}.")
