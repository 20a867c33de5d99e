"""The request parameters each task accepts, as reported by the models service."""

from __future__ import annotations

PARAMETERS: dict[str, list[str]] = {
    "automatic-speech-recognition": [
        "language",
        "task",
        "return_timestamps",
        "chunk_length_s",
        "stride_length_s",
        "batch_size",
        "num_beams",
        "max_new_tokens",
        "temperature",
        "return_language",
    ],
    "text-classification": ["top_k", "function_to_apply"],
    "token-classification": ["aggregation_strategy", "ignore_labels"],
    "fill-mask": ["top_k", "targets"],
    "feature-extraction": ["pooling", "normalize", "truncation", "return_tensors"],
    "zero-shot-classification": ["candidate_labels", "hypothesis_template", "multi_label"],
    "text-generation": [
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "max_new_tokens",
        "repetition_penalty",
        "seed",
        "stop_sequence",
        "return_full_text",
        "num_return_sequences",
    ],
}


def accepted_parameters(task: str) -> list[str]:
    return list(PARAMETERS.get(task, []))
