"""The spoken language of a stretch of audio by Whisper's own language detection, run as a scheduler call.

Why a live stream asks once and keeps the answer: a multilingual Whisper given no language detects one in
every decode, from that decode's window alone. The language of a stream's words could then change from
one decode to the next (a short or noisy window read as another language), every decode paid for the
detection, and no decode could be forced with the words already final (tasks/whisper_prefix.py: the decoder
prompt holds the language). SimulStreaming likewise detects the language once, at the start of a stream.
The stream (streaming/session.py) asks once its audio holds `DETECT_AFTER_S` of speech, and passes the
answer to every later decode as the call's `language`, and to its results.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Seconds of audio a stream hears before its language is detected: Whisper's language identification
# is unreliable on a word or two, and a stream keeps the language it is given.
DETECT_AFTER_S = 2.0


def detects(model: Any) -> bool:
    """Whether `model` is a multilingual Whisper that can detect a language."""
    config = getattr(model, "generation_config", None)
    return (
        callable(getattr(model, "detect_language", None))
        and bool(getattr(config, "is_multilingual", False))
        and bool(getattr(config, "lang_to_id", None))
    )


def detect(pipe: Any, samples: np.ndarray) -> str:
    """The language Whisper hears in `samples` (at the feature extractor's rate), named as the pipeline's
    `return_language` names it ("english"), so a stream reports what a unary call reports."""
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    extractor = pipe.feature_extractor
    features = extractor(samples, sampling_rate=extractor.sampling_rate, return_tensors="pt").input_features
    model = pipe.model
    features = features.to(device=model.device, dtype=next(model.parameters()).dtype)
    ids = model.detect_language(input_features=features)
    token = pipe.tokenizer.convert_ids_to_tokens(int(ids[0]))
    code = str(token).strip("<|>")
    return LANGUAGES.get(code, code)
