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
}


def accepted_parameters(task: str) -> list[str]:
    return list(PARAMETERS.get(task, []))
