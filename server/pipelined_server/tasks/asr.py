"""automatic-speech-recognition: RecognitionConfig (what every recognition shares) and ClipRecognitionConfig
(what only a whole-clip Recognize adds) -> pipeline arguments, pipeline output -> protos.

Batching rules live here because only this adapter knows which inputs a batch would change:
- Whisper pads every window to 30 s, so short clips of any length batch together safely;
- Whisper long-form inputs (> 30 s, decoded sequentially) of different lengths crash in one batch,
  and `return_language` crashes with a batch above 1: both run alone;
- CTC models see the padding (features are normalised over it, padded frames are decoded), so only
  clips of identical length share a batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pipelined.v1 import speech_pb2

from ..config import InputLimits, ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .audio_input import decode_audio_input
from .checks import check_batch_size, check_chunking
from .decoding import decoding_kwargs
from .durations import to_duration, to_seconds

TASK = "automatic-speech-recognition"
WHISPER = "seq2seq_whisper"
WHISPER_WINDOW_S = 30.0

_TIMESTAMPS: dict[int, Any] = {
    speech_pb2.TIMESTAMP_GRANULARITY_UNSPECIFIED: None,
    speech_pb2.TIMESTAMP_GRANULARITY_SEGMENT: True,
    speech_pb2.TIMESTAMP_GRANULARITY_WORD: "word",
    speech_pb2.TIMESTAMP_GRANULARITY_CHAR: "char",
}
_SPEECH_TASKS = {
    speech_pb2.SPEECH_TASK_TRANSCRIBE: "transcribe",
    speech_pb2.SPEECH_TASK_TRANSLATE: "translate",
}


@dataclass(frozen=True)
class AsrCall:
    """One recognition, ready for the scheduler."""

    kwargs: dict[str, Any]
    key: Hashable
    batchable: bool


def model_kind(instance: ModelInstance) -> str:
    return str(getattr(instance.pipeline, "type", ""))


def call_kwargs(config: speech_pb2.RecognitionConfig, kind: str, limits: InputLimits) -> dict[str, Any]:
    """Pipeline call arguments of the shared config, rejecting what this kind of model cannot do or what
    exceeds the server's `limits`."""
    kwargs: dict[str, Any] = {}
    generate: dict[str, Any] = {}
    is_whisper = kind == WHISPER
    if config.language:
        generate["language"] = config.language
    if config.task:
        if config.task not in _SPEECH_TASKS:
            raise InvalidInput(f"unknown task value {config.task}: use TRANSCRIBE or TRANSLATE")
        generate["task"] = _SPEECH_TASKS[config.task]
    if config.HasField("generation"):
        gen = decoding_kwargs(config.generation, limits, "generation.")
        if gen.get("temperature", 0) > 0 and "do_sample" not in gen:
            gen["do_sample"] = True
        generate.update(gen)
    if generate and not kind.startswith("seq2seq"):
        raise InvalidInput(
            f"language, task and generation options need a generative model; this model is {kind or 'not generative'}"
        )
    if generate:
        kwargs["generate_kwargs"] = generate

    timestamps = _TIMESTAMPS.get(config.timestamps)
    if config.timestamps not in _TIMESTAMPS:
        raise InvalidInput(f"unknown timestamps value {config.timestamps}")
    if timestamps is not None:
        if is_whisper and timestamps == "char":
            raise InvalidInput("Whisper returns SEGMENT or WORD timestamps, not CHAR")
        if kind.startswith("ctc") and timestamps is True:
            raise InvalidInput("CTC models return WORD or CHAR timestamps, not SEGMENT")
        if kind == "seq2seq":
            raise InvalidInput("this sequence-to-sequence model cannot return timestamps")
        kwargs["return_timestamps"] = timestamps
    return kwargs


def clip_kwargs(clip: speech_pb2.ClipRecognitionConfig, kind: str, limits: InputLimits) -> dict[str, Any]:
    """Recognize: the shared arguments plus the pipeline's chunking, batching and language report (within
    the server's `limits`)."""
    kwargs = call_kwargs(clip.config, kind, limits)
    chunk_s = to_seconds(clip.chunk_length) if clip.HasField("chunk_length") else 0.0
    stride_s = to_seconds(clip.stride_length) if clip.HasField("stride_length") else None
    if chunk_s < 0 or (stride_s is not None and stride_s < 0):
        raise InvalidInput("chunk_length and stride_length must not be negative")
    if chunk_s > 0:
        check_chunking(chunk_s, stride_s, limits)
        kwargs["chunk_length_s"] = chunk_s
        if stride_s is not None:
            if 2 * stride_s >= chunk_s:
                raise InvalidInput(
                    f"stride_length ({stride_s} s) must be less than half of chunk_length ({chunk_s} s)"
                )
            kwargs["stride_length_s"] = stride_s
    elif stride_s:
        raise InvalidInput("stride_length needs chunk_length")
    if clip.batch_size < 0:
        raise InvalidInput(f"batch_size must be >= 0, got {clip.batch_size}")
    if clip.batch_size:
        kwargs["batch_size"] = check_batch_size(clip.batch_size, limits)
    if clip.return_language:
        if kind != WHISPER:
            raise InvalidInput("return_language needs a Whisper model")
        kwargs["return_language"] = True
    return kwargs


def plan(kwargs: dict[str, Any], kind: str, samples: np.ndarray, rate: int) -> AsrCall:
    """How the scheduler may batch this recognition (see the module docstring)."""
    if kind == WHISPER:
        long_form = len(samples) > WHISPER_WINDOW_S * rate and "chunk_length_s" not in kwargs
        if long_form and not kwargs.get("return_timestamps"):
            # Whisper's long-form decoding needs timestamp tokens, and the local pipeline raises without them.
            # A service should transcribe a long file anyway: decode with segment timestamps, and the
            # response leaves out the chunks nobody asked for.
            kwargs = {**kwargs, "return_timestamps": True}
        if long_form or kwargs.get("return_language"):
            return AsrCall(kwargs, key=None, batchable=False)
        return AsrCall(kwargs, key="whisper", batchable=True)
    return AsrCall(kwargs, key=("samples", len(samples)), batchable=True)


def chunk_to_proto(chunk: dict[str, Any], offset_s: float = 0.0) -> speech_pb2.TranscriptChunk:
    proto = speech_pb2.TranscriptChunk(text=chunk.get("text", ""), language=chunk.get("language") or "")
    start, end = chunk.get("timestamp", (None, None))
    if start is not None:
        proto.start_offset.CopyFrom(to_duration(start + offset_s))
    if end is not None:
        proto.end_offset.CopyFrom(to_duration(end + offset_s))
    return proto


def response_from_output(
    output: dict[str, Any], model: str, requested: dict[str, Any]
) -> speech_pb2.RecognizeResponse:
    """`requested` is the caller's arguments: chunks are only sent when it asked for timestamps or language."""
    wanted = requested.get("return_timestamps") or requested.get("return_language")
    chunks = (output.get("chunks") or []) if wanted else []
    languages = {c.get("language") for c in chunks if c.get("language")}
    return speech_pb2.RecognizeResponse(
        text=output.get("text", ""),
        chunks=[chunk_to_proto(c) for c in chunks],
        language=languages.pop() if len(languages) == 1 else "",
        model=model,
    )


class Recognition(Adapter[speech_pb2.RecognizeRequest, speech_pb2.RecognizeResponse]):
    """Recognize: one clip, one pipeline result."""

    task = TASK

    def model_of(self, request: speech_pb2.RecognizeRequest) -> str:
        return request.config.config.model

    def arguments(
        self, request: speech_pb2.RecognizeRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        return clip_kwargs(request.config, model_kind(instance), config.limits)

    def items(
        self,
        request: speech_pb2.RecognizeRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        samples = decode_audio_input(request.audio, instance.sampling_rate, config.audio)
        call = plan(kwargs, model_kind(instance), samples, instance.sampling_rate)
        return [Item(samples, key=call.key, batchable=call.batchable, kwargs=call.kwargs)]

    def response(
        self,
        request: speech_pb2.RecognizeRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> speech_pb2.RecognizeResponse:
        return response_from_output(outputs[0], instance.name, kwargs)


ADAPTER = Recognition()
