"""automatic-speech-recognition call arguments -> RecognitionConfig (what every recognition shares) and
ClipRecognitionConfig (what a whole-clip call adds), and responses -> the pipeline's dicts."""

from __future__ import annotations

from typing import Any

from ..v1 import speech_pb2
from .durations import duration as _duration
from .durations import seconds as _seconds

TASK = "automatic-speech-recognition"
_TIMESTAMPS = {
    None: speech_pb2.TIMESTAMP_GRANULARITY_UNSPECIFIED,
    False: speech_pb2.TIMESTAMP_GRANULARITY_UNSPECIFIED,
    True: speech_pb2.TIMESTAMP_GRANULARITY_SEGMENT,
    "word": speech_pb2.TIMESTAMP_GRANULARITY_WORD,
    "char": speech_pb2.TIMESTAMP_GRANULARITY_CHAR,
}
_TASKS = {"transcribe": speech_pb2.SPEECH_TASK_TRANSCRIBE, "translate": speech_pb2.SPEECH_TASK_TRANSLATE}
_GENERATION = ("num_beams", "max_new_tokens", "temperature")
# Call arguments every recognition takes: a whole clip, long audio streamed back, live audio.
SHARED = frozenset({"return_timestamps", "generate_kwargs", "language", "task", *_GENERATION})
# Call arguments only a whole-clip call takes: the pipeline's chunking and batching, the language report.
CLIP_ONLY = frozenset({"chunk_length_s", "stride_length_s", "batch_size", "return_language"})
KNOWN = SHARED | CLIP_ONLY


def recognition_config(model: str, kwargs: dict[str, Any]) -> speech_pb2.RecognitionConfig:
    """Maps the transformers ASR pipeline's shared call arguments onto the wire config."""
    unknown = set(kwargs) - SHARED
    if unknown & CLIP_ONLY:
        raise TypeError(
            f"{', '.join(sorted(unknown & CLIP_ONLY))} only apply to a whole-clip call: long and live audio "
            "are cut into windows by the server"
        )
    if unknown:
        raise TypeError(f"unsupported automatic-speech-recognition argument(s): {', '.join(sorted(unknown))}")
    generate = dict(kwargs.get("generate_kwargs") or {})
    for name in ("language", "task", *_GENERATION):
        if name in kwargs:
            generate[name] = kwargs[name]
    config = speech_pb2.RecognitionConfig(model=model or "")
    if generate.get("language"):
        config.language = str(generate.pop("language"))
    generate.pop("language", None)
    if generate.get("task"):
        task = generate.pop("task")
        if task not in _TASKS:
            raise ValueError(f"task must be 'transcribe' or 'translate', got {task!r}")
        config.task = _TASKS[task]
    for name in _GENERATION:
        if generate.get(name) is not None:
            setattr(config.generation, name, generate.pop(name))
    generate = {k: v for k, v in generate.items() if v is not None}
    if generate.pop("do_sample", None) is False:
        generate.pop("temperature", None)
    if generate:
        raise TypeError(f"unsupported generate_kwargs over gRPC: {', '.join(sorted(generate))}")
    timestamps = kwargs.get("return_timestamps")
    if timestamps not in _TIMESTAMPS:
        raise ValueError(f"return_timestamps must be True, 'word' or 'char', got {timestamps!r}")
    config.timestamps = _TIMESTAMPS[timestamps]
    return config


def clip_config(model: str, kwargs: dict[str, Any]) -> speech_pb2.ClipRecognitionConfig:
    """The wire config of a whole-clip call: the shared config plus the clip-only arguments."""
    config = speech_pb2.ClipRecognitionConfig(
        config=recognition_config(model, {k: v for k, v in kwargs.items() if k not in CLIP_ONLY})
    )
    if kwargs.get("chunk_length_s"):
        config.chunk_length.CopyFrom(_duration(kwargs["chunk_length_s"]))
    stride = kwargs.get("stride_length_s")
    if stride is not None:
        if isinstance(stride, list | tuple):
            if len(set(stride)) != 1:
                raise ValueError("stride_length_s must be the same on both sides over gRPC")
            stride = stride[0]
        config.stride_length.CopyFrom(_duration(stride))
    if kwargs.get("batch_size"):
        config.batch_size = int(kwargs["batch_size"])
    config.return_language = bool(kwargs.get("return_language"))
    return config


def _chunk(
    chunk: speech_pb2.TranscriptChunk, with_language: bool, with_timestamp: bool = True
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if with_language:
        out["language"] = chunk.language or None
    out["text"] = chunk.text
    if with_timestamp:
        start = _seconds(chunk.start_offset) if chunk.HasField("start_offset") else None
        end = _seconds(chunk.end_offset) if chunk.HasField("end_offset") else None
        out["timestamp"] = (start, end)
    return out


def result_dict(response: speech_pb2.RecognizeResponse, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The dict the local pipeline returns for the same call."""
    result: dict[str, Any] = {"text": response.text}
    with_language = bool(kwargs.get("return_language"))
    with_timestamps = bool(kwargs.get("return_timestamps"))
    if with_timestamps or with_language:
        result["chunks"] = [_chunk(c, with_language, with_timestamps) for c in response.chunks]
    return result


def segment_dict(response: speech_pb2.StreamingRecognizeFileResponse) -> dict[str, Any]:
    """One streamed long-form segment: the pipeline's chunk shape, plus its words and progress."""
    segment = _chunk(response.segment, False)
    if response.words:
        segment["words"] = [_chunk(w, False) for w in response.words]
    segment["audio_processed_s"] = _seconds(response.audio_processed)
    segment["audio_duration_s"] = _seconds(response.audio_duration)
    return segment
