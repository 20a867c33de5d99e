"""audio-classification, zero-shot-audio-classification and text-to-audio: protos <-> pipeline arguments.

Batching rule: a clip's features are normalised over the padded batch by Wav2Vec2-style extractors, and
padded frames reach the model, so only clips of identical length share a batch. Text-to-audio runs each
text alone: padded texts change the synthesised durations of VITS-like models, and a batch's audio is
padded to its longest clip.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pipelined.v1 import audio_tasks_pb2

from ..audio import encode_wav
from ..config import InputLimits
from ..errors import InvalidInput
from .decoding import decoding_kwargs
from .submit import Item

AUDIO_CLASSIFICATION = "audio-classification"
ZERO_SHOT_AUDIO_CLASSIFICATION = "zero-shot-audio-classification"
TEXT_TO_AUDIO = "text-to-audio"


def same_length(clips: list[np.ndarray]) -> list[Item]:
    return [Item(clip, key=("samples", len(clip))) for clip in clips]


def generate_kwargs(request: audio_tasks_pb2.GenerateAudioRequest, limits: InputLimits) -> dict[str, Any]:
    """The set decoding fields and `guidance_scale`, as `generate_kwargs` of the pipeline call."""
    generate = decoding_kwargs(request.generation, limits)
    if request.HasField("guidance_scale"):
        generate["guidance_scale"] = request.guidance_scale
    return {"generate_kwargs": generate} if generate else {}


def texts(request: audio_tasks_pb2.GenerateAudioRequest) -> list[Item]:
    if any(not text.strip() for text in request.texts):
        raise InvalidInput("every text to synthesise must be non-empty")
    return [Item(text, batchable=False) for text in request.texts]


def generated_audio(output: dict[str, Any]) -> audio_tasks_pb2.GeneratedAudio:
    audio = np.asarray(output["audio"])
    rate = int(output["sampling_rate"])
    return audio_tasks_pb2.GeneratedAudio(
        wav=encode_wav(audio, rate), sampling_rate_hertz=rate, shape=list(audio.shape)
    )
