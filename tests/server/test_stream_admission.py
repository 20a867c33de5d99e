"""Admission of live streams from the model's measured real-time factor (no gRPC: a stand-in scheduler
whose busy seconds the test advances, as the real one does while it computes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from pipelined_server.errors import QueueFull
from pipelined_server.metrics import Metrics
from pipelined_server.streaming import admission
from pipelined_server.streaming.admission import Admission


@dataclass
class Busy:
    busy_s: float = 0.0
    spare_busy_s: float = 0.0
    replica_count: int = 2


@dataclass
class Instance:
    name: str = "m"
    scheduler: Busy = field(default_factory=Busy)


def stream_for(gate: Admission, model: Any, seconds: float, rtf: float, streams: int) -> None:
    """`streams` streams each receive `seconds` of audio, costing `rtf` replica-seconds per audio second."""
    for _ in range(int(seconds * 10)):
        for _ in range(streams):
            model.scheduler.busy_s += 0.1 * rtf
            gate.received(model, 0.1, streams)


@pytest.fixture
def clock(monkeypatch: Any) -> list[float]:
    """Admission's clock, advanced by the test."""
    now = [0.0]
    monkeypatch.setattr(admission.time, "monotonic", lambda: now[0])
    return now


def test_refuses_the_stream_that_would_pass_the_utilization_and_keeps_the_measure(clock: list[float]) -> None:
    metrics = Metrics()
    gate, model = Admission(max_utilization=0.8, max_streams=64, metrics=metrics), Instance()
    gate.admit(model, 0)  # nothing measured: admitted
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 2  # one per replica
    for _ in range(30):  # 3 s of audio per stream, 0.5 replica-seconds per audio second: 25% of 2 replicas
        clock[0] += 0.1
        stream_for(gate, model, 0.1, rtf=0.5, streams=2)
    gate.admit(model, 2)  # 3 x 25% = 75% <= 80%
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 1
    with pytest.raises(QueueFull, match="admission_max_utilization=0.8") as caught:
        gate.admit(model, 3)  # 4 x 25% = 100%
    assert caught.value.retry_after_s == admission.RETRY_AFTER_S
    clock[0] += 600  # a quiet spell: the last measure still holds
    with pytest.raises(QueueFull):
        gate.admit(model, 3)
    gate.admit(model, 0)  # no stream open: nothing to protect


def test_spare_decodes_are_not_a_streams_cost(clock: list[float]) -> None:
    """Re-decodes run only because the model was idle (priority below 0: the scheduler's spare_busy_s) leave
    the measure: two streams needing 25% each, and doubling their decodes while idle, still admit a third."""
    metrics = Metrics()
    gate = Admission(max_utilization=0.8, max_streams=64, metrics=metrics, cpu_seconds=lambda: 0.0)
    model = Instance()
    for _ in range(30):
        clock[0] += 0.1
        model.scheduler.busy_s += 0.1 * 0.5 * 2  # spare decodes: as much again as the needed ones
        model.scheduler.spare_busy_s += 0.1 * 0.5 * 2
        stream_for(gate, model, 0.1, rtf=0.5, streams=2)
    gate.admit(model, 2)  # 3 x 25% = 75% <= 80%; counting the spare work, 3 x 50%
    assert metrics.value("pipelined_stream_share", {"model": "m"}) == pytest.approx(0.25)


def test_unmeasured_and_uncalibrated_admits_one_stream_per_replica() -> None:
    metrics = Metrics()
    gate = Admission(max_utilization=0.85, max_streams=64, metrics=metrics)
    model = Instance()
    gate.admit(model, 0)
    gate.admit(model, 1)
    with pytest.raises(QueueFull, match="one per replica until their cost is measured") as caught:
        gate.admit(model, 2)
    assert caught.value.retry_after_s == admission.RETRY_AFTER_S
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 0


def test_the_calibrated_share_holds_until_streams_are_measured(clock: list[float]) -> None:
    metrics = Metrics()
    gate, model = Admission(max_utilization=0.8, max_streams=64, metrics=metrics), Instance()
    gate.calibrated(model, 0.3)  # before any stream: 2 streams fit in 80%
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 2
    assert metrics.value("pipelined_stream_share", {"model": "m"}) == 0.3
    gate.admit(model, 1)
    with pytest.raises(QueueFull, match="take 60% of it .calibrated at start-up.") as caught:
        gate.admit(model, 2)
    assert caught.value.retry_after_s == admission.RETRY_AFTER_S
    for _ in range(30):  # measured: 0.2 replica-seconds per audio second, 10% of 2 replicas
        clock[0] += 0.1
        stream_for(gate, model, 0.1, rtf=0.2, streams=2)
    gate.admit(model, 2)  # the measure replaced the calibration: 3 x 10% <= 80%
    assert metrics.value("pipelined_stream_share", {"model": "m"}) == pytest.approx(0.1)
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 6
    with pytest.raises(QueueFull, match=r"\(measured\)"):
        gate.admit(model, 8)


def test_a_streams_cpu_time_outside_the_model_counts_when_it_is_the_larger(clock: list[float]) -> None:
    """Voice activity, resampling, gRPC and cores shared with sibling workers cost CPU time that the
    replicas' busy time misses: the share is the larger of the two."""
    metrics = Metrics()
    cpu = [0.0]
    gate = Admission(
        max_utilization=0.8, max_streams=64, metrics=metrics, cores=1.0, cpu_seconds=lambda: cpu[0]
    )
    model = Instance()
    for _ in range(
        30
    ):  # the model: 0.1 replica-seconds per audio second (5% of 2 replicas); the process: 0.3
        clock[0] += 0.1
        cpu[0] += 0.1 * 0.3 * 2
        stream_for(gate, model, 0.1, rtf=0.1, streams=2)
    gate.admit(model, 1)
    assert metrics.value("pipelined_stream_share", {"model": "m"}) == pytest.approx(0.3, rel=0.05)
    assert metrics.value("pipelined_stream_headroom", {"model": "m"}) == 1  # 2 x 30% fit in 80%, 3 do not
    with pytest.raises(QueueFull, match=r"take (59|60)% of it \(measured\)"):
        gate.admit(model, 2)
    wide = Admission(
        max_utilization=0.8, max_streams=64, metrics=Metrics(), cores=8.0, cpu_seconds=lambda: cpu[0]
    )
    for _ in range(30):  # the same CPU time over 8 cores: the replicas' busy time is the larger again
        clock[0] += 0.1
        cpu[0] += 0.1 * 0.3 * 2
        stream_for(wide, model, 0.1, rtf=0.1, streams=2)
    assert wide.observe(model, 2) == pytest.approx(0.05, rel=0.05)
