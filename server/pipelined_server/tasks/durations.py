"""Seconds <-> google.protobuf.Duration, exact for the pipeline's rounded timestamps."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration


def to_duration(seconds: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


def to_seconds(duration: Duration) -> float:
    # Dividing the integer nanoseconds once gives back the same float the pipeline produced (e.g. 5.44).
    return (duration.seconds * 1_000_000_000 + duration.nanos) / 1e9
