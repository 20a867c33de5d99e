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
    "image-classification": ["top_k", "function_to_apply"],
    "object-detection": ["threshold"],
    "zero-shot-image-classification": ["candidate_labels", "hypothesis_template"],
    "zero-shot-object-detection": ["candidate_labels", "threshold", "top_k"],
    "image-segmentation": ["subtask", "threshold", "mask_threshold", "overlap_mask_area_threshold"],
    "depth-estimation": [],
    "image-feature-extraction": ["pool"],
    "image-text-to-text": [
        "continue_final_message",
        "max_new_tokens",
        "do_sample",
        "temperature",
        "top_k",
        "top_p",
        "num_beams",
        "repetition_penalty",
    ],
    "document-question-answering": ["word_boxes", "top_k", "max_answer_len", "handle_impossible_answer"],
    "audio-classification": ["top_k", "function_to_apply"],
    "zero-shot-audio-classification": ["candidate_labels", "hypothesis_template"],
    "text-to-audio": ["max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "guidance_scale"],
}


def accepted_parameters(task: str) -> list[str]:
    return list(PARAMETERS.get(task, []))
