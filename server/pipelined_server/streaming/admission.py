"""Admission of live streams within a model's measured capacity, instead of collapse.

Every admitted stream costs its model's replicas a share of their time: a decode step per interval, at
a cost that depends on the model, the machine, the batch it shares. That share is measured, not
assumed: the model's real-time factor over the last `_HORIZON_S` is the seconds its replicas spent
computing (the scheduler counts them) per second of audio its streams received, and divided by the
replicas it is the share of the model one real-time stream takes; or, when larger, the process's CPU
seconds per second of audio over the cores it may count on (what the stream costs outside the model,
and cores shared with sibling workers, count too: `Admission.cores`). A new stream is refused with
RESOURCE_EXHAUSTED and a retry hint when the open streams and it would take more than
`streaming.admission_max_utilization` of the model: past that, decodes queue behind each other and
every stream's lag grows without bound (4 real-time streams of whisper-tiny.en on 2 cores, admitted
without a check, lagged 18-22 s).

Under overload the streams' decodes stretch (see session.py), so the measured factor becomes
replicas / streams and the next stream is refused. A model with no open stream admits one (there is
nothing to protect, and it supplies the measurement). Unary calls on the model count in its busy time,
so they make a stream's cost look higher, never lower. A stream's spare re-decodes (run only while the model
is idle: `streaming.idle_decode_interval_s`) are left out: under load they stop.

Before its streams have been measured, a model's share is the one calibrated at start-up
(calibration.py, `streaming.calibrate`): a fresh worker used to admit blind up to `streaming.max_streams`
(8 real-time tiny.en streams on a fresh 2-core server: 5 admitted, final lag p95 12.8 s, max 38.6 s).
Without a calibration (turned off, or it failed) a model admits one stream per replica until measured.
Calibration rather than that rule alone: one stream per replica is far too few where a replica serves
dozens of streams (a GPU), so a fresh server would refuse most of a reconnecting crowd for several retry
rounds, and too many where a stream needs more than one core; and it shows no headroom before a stream.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..batching import model_process
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
    # (time.monotonic(), scheduler busy seconds, process CPU seconds, audio_s), oldest first.
    samples: deque[tuple[float, float, float, float]] = field(default_factory=deque)
    last_share: float | None = None
    # The share calibrated at start-up, until a measured one exists.
    calibrated: float | None = None

    def add(self, now: float, busy: float, cpu: float) -> None:
        if len(self.samples) > 1 and now - self.samples[-1][0] < _SAMPLE_EVERY_S:
            self.samples[-1] = (self.samples[-1][0], busy, cpu, self.audio_s)
            return
        self.samples.append((now, busy, cpu, self.audio_s))
        # Keep one sample older than the horizon as the baseline of the measured span.
        while len(self.samples) > 2 and self.samples[1][0] <= now - _HORIZON_S:
            self.samples.popleft()

    def per_stream(self, replicas: int, cores: float) -> float | None:
        """The share of the model one real-time stream took over the horizon, or at the last time it was
        measured (after a quiet spell the horizon holds too little audio), or else as calibrated at
        start-up, or None if neither. Measured: the larger of the replicas' busy time and the process's
        CPU time over its cores, per second of audio (see `Admission.cores`)."""
        if len(self.samples) >= 2:
            (_, busy0, cpu0, audio0), (_, busy1, cpu1, audio1) = self.samples[0], self.samples[-1]
            audio = audio1 - audio0
            if audio >= _MIN_AUDIO_S and busy1 > busy0:
                self.last_share = max((busy1 - busy0) / replicas, (cpu1 - cpu0) / cores) / audio
        return self.last_share if self.last_share is not None else self.calibrated


@dataclass
class Admission:
    max_utilization: float
    max_streams: int
    metrics: Metrics
    # Told each model's headroom as it changes: sibling workers read it to relay streams here (relay.py).
    publish: Callable[[str, int], None] | None = None
    # The cores this process may count on (the machine's, split between the workers). The replicas' busy
    # time misses what a stream costs outside the model (voice activity, resampling, gRPC, the event
    # loop) and the cores that two workers and their clients share: on 2 cores with 2 workers, a worker
    # that had measured 0.14 of its replica per stream (from one stream) admitted 5 of 8 real-time
    # tiny.en streams, its sibling 3, and every stream's final lag grew to 11.6 s at p95, 20.9 s max;
    # their CPU time was 0.23 s per second of audio (bench/asr_streaming.py --streams 8).
    cores: float = 1.0
    # The process's CPU seconds (all threads) and its model processes'; replaced in tests.
    cpu_seconds: Callable[[], float] = field(
        default=lambda: time.process_time() + model_process.cpu_seconds()
    )
    _loads: dict[str, _Load] = field(default_factory=dict)

    def received(self, instance: ModelInstance, seconds: float, streams: int) -> None:
        """A stream of the model received `seconds` of audio (sessions call this per chunk)."""
        self._loads.setdefault(instance.name, _Load()).audio_s += seconds
        self.observe(instance, streams)

    def calibrated(self, instance: ModelInstance, share: float | None) -> None:
        """The model's share per stream as calibrated at start-up, before any stream (calibration.py), or
        None without a calibration: either way its headroom shows before the first stream."""
        self._loads.setdefault(instance.name, _Load()).calibrated = share
        self._show(instance, share, 0)

    def observe(self, instance: ModelInstance, streams: int) -> float | None:
        """Records the model's load now; returns one real-time stream's share of the model (measured, or
        calibrated until measured)."""
        scheduler = instance.scheduler
        assert scheduler is not None
        load = self._loads.setdefault(instance.name, _Load())
        # Spare decodes (a stream's extra re-decodes while the model was idle) are not what a stream needs:
        # their time leaves both measures (on the replica's thread, a decode's time is about its CPU time).
        spare = scheduler.spare_busy_s
        load.add(time.monotonic(), scheduler.busy_s - spare, self.cpu_seconds() - spare)
        share = load.per_stream(scheduler.replica_count, self.cores)
        self._show(instance, share, streams)
        return share

    def _capacity(self, instance: ModelInstance, share: float | None) -> int:
        """Real-time streams the model holds within the utilization bound (one per replica unmeasured)."""
        if share is None:
            assert instance.scheduler is not None
            return min(self.max_streams, instance.scheduler.replica_count)
        if share <= 0:
            return self.max_streams
        return min(self.max_streams, math.floor(self.max_utilization / share + 1e-9))

    def _show(self, instance: ModelInstance, share: float | None, streams: int) -> None:
        headroom = max(0, self._capacity(instance, share) - streams)
        self.metrics.stream_headroom.labels(instance.name).set(headroom)
        if self.publish is not None:
            self.publish(instance.name, headroom)
        if share is not None:
            self.metrics.stream_share.labels(instance.name).set(share)

    def admit(self, instance: ModelInstance, streams: int) -> None:
        """Refuses one more stream beside `streams` open ones when it would overload the model."""
        share = self.observe(instance, streams)
        if not streams or streams < self._capacity(instance, share):
            return
        if share is None:
            why = (
                f"{streams} open streams, one per replica until their cost is measured "
                "(streaming.calibrate is off, or the calibration failed)"
            )
        else:
            measured = self._loads[instance.name].last_share is not None
            why = (
                f"{streams} open streams take {streams * share:.0%} of it "
                f"({'measured' if measured else 'calibrated at start-up'}), one more would pass "
                f"streaming.admission_max_utilization={self.max_utilization:g}"
            )
        raise QueueFull(
            f"model {instance.name!r} is at capacity for live streams: {why}; retry in "
            f"{RETRY_AFTER_S:g} s or on another instance",
            retry_after_s=RETRY_AFTER_S,
        )
