"""audio-classification, zero-shot-audio-classification and text-to-audio: protos <-> pipeline arguments.

Batching rule: a clip's features are normalised over the padded batch by Wav2Vec2-style extractors, and
padded frames reach the model, so only clips of identical length share a batch. Text-to-audio runs each
text alone: padded texts change the synthesised durations of VITS-like models, and a batch's audio is
padded to its longest clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pipelined.v1 import audio_tasks_pb2

from ..audio import encode_wav
from ..config import InputLimits, ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item, ResultPerInput
from .audio_input import decode_audio_input
from .checks import check_count
from .decoding import decoding_kwargs
from .encoding import as_list, class_scores
from .options import bounded_labels, classification_kwargs, zero_shot_classification_kwargs

AUDIO_CLASSIFICATION = "audio-classification"
ZERO_SHOT_AUDIO_CLASSIFICATION = "zero-shot-audio-classification"
TEXT_TO_AUDIO = "text-to-audio"


def same_length(clips: list[np.ndarray]) -> list[Item]:
    """Only clips of the same sample count share a batch. The count alone is the key: every key on the
    scheduler of an audio-classification model (zero-shot too) comes from here, so a label would tell nothing
    apart."""
    return [Item(clip, key=len(clip)) for clip in clips]


def generate_kwargs(request: audio_tasks_pb2.GenerateAudioRequest, limits: InputLimits) -> dict[str, Any]:
    """The set decoding fields and `guidance_scale`, as `generate_kwargs` of the pipeline call."""
    generate = decoding_kwargs(request.generation, limits)
    if request.HasField("guidance_scale"):
        generate["guidance_scale"] = request.guidance_scale
    return {"generate_kwargs": generate} if generate else {}


def generated_audio(output: dict[str, Any]) -> audio_tasks_pb2.GeneratedAudio:
    audio = np.asarray(output["audio"])
    rate = int(output["sampling_rate"])
    return audio_tasks_pb2.GeneratedAudio(
        wav=encode_wav(audio, rate), sampling_rate_hertz=rate, shape=list(audio.shape)
    )


class AudioClassification(ResultPerInput):
    """Clips in, label scores out: audio-classification and its zero-shot twin differ in options only."""

    def arguments(self, request: Any, instance: ModelInstance, config: ServerConfig) -> dict[str, Any]:
        # Zero-shot: every label is one more forward pass per input.
        return bounded_labels(super().arguments(request, instance, config), config.limits)

    def items(
        self, request: Any, instance: ModelInstance, config: ServerConfig, kwargs: dict[str, Any]
    ) -> list[Item]:
        check_count(len(request.audios), "audios", config.limits)
        rate = instance.sampling_rate
        return same_length([decode_audio_input(a, rate, config.audio) for a in request.audios])


class TextToAudio(Adapter[audio_tasks_pb2.GenerateAudioRequest, audio_tasks_pb2.GenerateAudioResponse]):
    task = TEXT_TO_AUDIO
    # WAV encoding of every result is blocking work.
    encodes = True

    def arguments(
        self, request: audio_tasks_pb2.GenerateAudioRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return generate_kwargs(request, config.limits)

    def items(
        self,
        request: audio_tasks_pb2.GenerateAudioRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        check_count(len(request.texts), "texts", config.limits)
        if any(not text.strip() for text in request.texts):
            raise InvalidInput("every text to synthesise must be non-empty")
        return [Item(text, batchable=False) for text in request.texts]

    def response(
        self,
        request: audio_tasks_pb2.GenerateAudioRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> audio_tasks_pb2.GenerateAudioResponse:
        return audio_tasks_pb2.GenerateAudioResponse(
            results=[generated_audio(o) for o in outputs], model=instance.name
        )


def _label_scores(output: Any) -> Any:
    return class_scores(as_list(output))


AUDIO_CLASSIFICATION_ADAPTER = AudioClassification(
    AUDIO_CLASSIFICATION, audio_tasks_pb2.ClassifyAudioResponse, classification_kwargs, _label_scores
)
ZERO_SHOT_AUDIO_CLASSIFICATION_ADAPTER = AudioClassification(
    ZERO_SHOT_AUDIO_CLASSIFICATION,
    audio_tasks_pb2.ClassifyAudioZeroShotResponse,
    zero_shot_classification_kwargs,
    _label_scores,
)
TEXT_TO_AUDIO_ADAPTER = TextToAudio()
