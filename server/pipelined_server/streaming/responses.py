"""Words and events -> StreamingRecognizeResponse protos."""

from __future__ import annotations

from pipelined.v1 import speech_pb2

from ..tasks.durations import to_duration
from .agreement import Word

# Interim words ending this close to the decoded audio's end are the ones the next decode most often changes.
_UNSTABLE_EDGE_S = 1.0


def result(
    words: list[Word], is_final: bool, with_words: bool, language: str, decoded_end_s: float = 0.0
) -> speech_pb2.StreamingRecognitionResult:
    if is_final:
        stability = 1.0
    else:
        settled = sum(1 for w in words if w.end <= decoded_end_s - _UNSTABLE_EDGE_S)
        stability = round(0.9 * settled / len(words), 3) if words else 0.0
    proto = speech_pb2.StreamingRecognitionResult(
        text=" ".join(w.text for w in words), is_final=is_final, stability=stability, language=language
    )
    if words:
        proto.start_offset.CopyFrom(to_duration(words[0].start))
        proto.end_offset.CopyFrom(to_duration(words[-1].end))
    if with_words:
        for w in words:
            chunk = proto.words.add(text=w.text)
            chunk.start_offset.CopyFrom(to_duration(w.start))
            chunk.end_offset.CopyFrom(to_duration(w.end))
    return proto


def response(
    results: list[speech_pb2.StreamingRecognitionResult],
    processed_s: float,
    model: str,
    latency_s: float | None = None,
    event: int = speech_pb2.SPEECH_EVENT_UNSPECIFIED,
    event_s: float | None = None,
) -> speech_pb2.StreamingRecognizeResponse:
    proto = speech_pb2.StreamingRecognizeResponse(results=results, speech_event=event, model=model)  # type: ignore[arg-type]
    proto.audio_processed.CopyFrom(to_duration(processed_s))
    if latency_s is not None:
        proto.processing_latency.CopyFrom(to_duration(max(0.0, latency_s)))
    if event_s is not None:
        proto.speech_event_offset.CopyFrom(to_duration(event_s))
    return proto
