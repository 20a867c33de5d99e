"""Seconds <-> google.protobuf.Duration."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration


def duration(seconds: float) -> Duration:
    value = Duration()
    value.FromNanoseconds(round(float(seconds) * 1e9))
    return value


def seconds(value: Duration) -> float:
    return (value.seconds * 1_000_000_000 + value.nanos) / 1e9
