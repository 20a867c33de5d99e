"""Admission of live streams within a model's measured capacity, instead of collapse.

Every admitted stream costs its model's replicas a share of their time: a decode step per interval, at
a cost that depends on the model, the machine, the batch it shares. That share is measured, not
assumed: the model's real-time factor over the last `_HORIZON_S` is the seconds its replicas spent
computing (the scheduler counts them) per second of audio its streams received, and divided by the
replicas it is the share of the model one real-time stream takes. A new stream is refused with
RESOURCE_EXHAUSTED and a retry hint when the open streams and it would take more than
`streaming.admission_max_utilization` of the model: past that, decodes queue behind each other and
every stream's lag grows without bound (4 real-time streams of whisper-tiny.en on 2 cores, admitted
without a check, lagged 18-22 s).

Under overload the streams' decodes stretch (see session.py), so the measured factor becomes
replicas / streams and the next stream is refused. A model with no open stream admits one (there is
nothing to protect, and it supplies the measurement), and so does one not measured yet, up to
`streaming.max_streams`. Unary calls on the model count in its busy time, so they make a stream's
cost look higher, never lower.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from ..errors import QueueFull
from ..metrics import Metrics
from ..registry import ModelInstance

# Utilization is measured over this much recent time (a few decode intervals of every stream).
_HORIZON_S = 10.0
# Less measured audio than this says too little about the streams' cost.
_MIN_AUDIO_S = 2.0
# Samples closer together than this add nothing (sessions report every chunk).
_SAMPLE_EVERY_S = 0.25
# The retry hint of a refused stream: about when the measured load will have been measured again.
RETRY_AFTER_S = 5.0


@dataclass
class _Load:
    # Seconds of audio the model's streams received, all together.
    audio_s: float = 0.0
    # (time.monotonic(), scheduler busy seconds, audio_s), oldest first.
    samples: deque[tuple[float, float, float]] = field(default_factory=deque)
    last_share: float | None = None

    def add(self, now: float, busy: float) -> None:
        if len(self.samples) > 1 and now - self.samples[-1][0] < _SAMPLE_EVERY_S:
            self.samples[-1] = (self.samples[-1][0], busy, self.audio_s)
            return
        self.samples.append((now, busy, self.audio_s))
        # Keep one sample older than the horizon as the baseline of the measured span.
        while len(self.samples) > 2 and self.samples[1][0] <= now - _HORIZON_S:
            self.samples.popleft()

    def per_stream(self, replicas: int) -> float | None:
        """The share of the model one real-time stream took over the horizon, or at the last time it was
        measured (after a quiet spell the horizon holds too little audio), or None if never measured."""
        if len(self.samples) >= 2:
            (_, busy0, audio0), (_, busy1, audio1) = self.samples[0], self.samples[-1]
            if audio1 - audio0 >= _MIN_AUDIO_S and busy1 > busy0:
                self.last_share = (busy1 - busy0) / (audio1 - audio0) / replicas
        return self.last_share


@dataclass
class Admission:
    max_utilization: float
    max_streams: int
    metrics: Metrics
    _loads: dict[str, _Load] = field(default_factory=dict)

    def received(self, instance: ModelInstance, seconds: float, streams: int) -> None:
        """A stream of the model received `seconds` of audio (sessions call this per chunk)."""
        self._loads.setdefault(instance.name, _Load()).audio_s += seconds
        self.observe(instance, streams)

    def observe(self, instance: ModelInstance, streams: int) -> float | None:
        """Records the model's load now; returns one real-time stream's measured share of the model."""
        scheduler = instance.scheduler
        assert scheduler is not None
        load = self._loads.setdefault(instance.name, _Load())
        load.add(time.monotonic(), scheduler.busy_s)
        share = load.per_stream(scheduler.replica_count)
        headroom = self.max_streams - streams
        if share:
            headroom = min(headroom, math.floor(self.max_utilization / share + 1e-9) - streams)
        self.metrics.stream_headroom.labels(instance.name).set(max(0, headroom))
        return share

    def admit(self, instance: ModelInstance, streams: int) -> None:
        """Refuses one more stream beside `streams` open ones when it would overload the model."""
        share = self.observe(instance, streams)
        if streams and share is not None and (streams + 1) * share > self.max_utilization:
            raise QueueFull(
                f"model {instance.name!r} is at capacity for live streams: {streams} open streams take "
                f"{streams * share:.0%} of it (measured), one more would pass "
                f"streaming.admission_max_utilization={self.max_utilization:g}; retry in "
                f"{RETRY_AFTER_S:g} s or on another instance",
                retry_after_s=RETRY_AFTER_S,
            )
