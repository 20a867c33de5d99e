"""Prometheus metrics, defined once and shared by the servicers, the scheduler and the registry.

A private registry keeps tests that build several servers in one process from colliding. Under several
worker processes (workers.py) prometheus-client's multiprocess mode stores every sample in a per-process
file that the supervisor sums; each gauge says how its workers' values combine. Label values come only
from what the server serves (`allow`): a model or task name a caller made up is counted as `unknown`, so
4,000 calls naming 4,000 models add one series, not 4,000.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


UNKNOWN = "unknown"


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)
    # Label values callers may cause: the served models, and the served tasks plus the services' own.
    models: set[str] = field(default_factory=set)
    tasks: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        r = self.registry
        self._call_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}
        self.requests = Counter(
            "pipelined_requests_total", "Finished RPCs.", ["model", "task", "method", "code"], registry=r
        )
        self.request_latency = Histogram(
            "pipelined_request_latency_seconds",
            "RPC latency, from arrival to the last response.",
            ["model", "task", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "pipelined_queue_time_seconds",
            "Time a request waited in its model's queue before its batch started.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "pipelined_batch_size",
            "Requests per pipeline call.",
            ["model"],
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "pipelined_queue_depth",
            "Requests waiting per model.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pipeline_calls = Counter(
            "pipelined_pipeline_calls_total", "Calls into the transformers pipeline.", ["model"], registry=r
        )
        self.pipeline_items = Counter(
            "pipelined_pipeline_items_total", "Inputs computed by the pipeline.", ["model"], registry=r
        )
        self.skipped = Counter(
            "pipelined_requests_skipped_total",
            "Queued requests dropped before computing, by reason (cancelled, deadline).",
            ["model", "reason"],
            registry=r,
        )
        self.load_seconds = Gauge(
            "pipelined_model_load_seconds",
            "Time taken to load each model.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.weight_bytes = Gauge(
            "pipelined_model_weight_bytes",
            "Bytes of each model's weights per device (disk: offloaded by accelerate).",
            ["model", "device"],
            registry=r,
        )
        self.resident_bytes_after_load = Gauge(
            "pipelined_model_resident_bytes_after_load",
            "Resident memory of the server process right after the model loaded (models load in order).",
            ["model"],
            registry=r,
        )
        self.model_ready = Gauge(
            "pipelined_model_ready",
            "1 when the model serves requests; with several worker processes, how many serve it.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.active_streams = Gauge(
            "pipelined_active_streams",
            "Live recognition streams open.",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.unread_responses = Gauge(
            "pipelined_stream_unread_responses",
            "Responses of live streams waiting in the server for their clients to read them "
            "(each stream's bounded by streaming.max_unread_responses).",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.time_to_first_result = Histogram(
            "pipelined_stream_time_to_first_result_seconds",
            "From the first audio of a stream to its first result.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.final_lag = Histogram(
            "pipelined_stream_final_lag_seconds",
            "From the end of an utterance's audio (arrival) to its final result.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.real_time_factor = Histogram(
            "pipelined_stream_real_time_factor",
            "Decode time divided by the audio duration it covered, per decode step.",
            ["model"],
            buckets=(0.01, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0),
            registry=r,
        )
        self.stream_headroom = Gauge(
            "pipelined_stream_headroom",
            "Live streams a model can still admit within its capacity (calibrated at start-up, then "
            "measured; one stream per replica while neither exists).",
            ["model"],
            registry=r,
        )
        self.stream_share = Gauge(
            "pipelined_stream_share",
            "Share of a model's replicas one real-time live stream takes: calibrated at start-up "
            "(streaming.calibrate), then measured from recent streams (the replicas' busy time, or the "
            "worker's CPU time over its cores when larger); the worst worker's.",
            ["model"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.streams_ended = Counter(
            "pipelined_streams_ended_total",
            "Live streams ended, by final status.",
            ["model", "code"],
            registry=r,
        )
        self.streams_relayed = Counter(
            "pipelined_streams_relayed_total",
            "Live streams a worker could not admit and relayed to a sibling worker with headroom "
            "(several workers); the sibling counts them in the other stream metrics.",
            ["model"],
            registry=r,
        )

    def allow(self, models: Iterable[str] = (), tasks: Iterable[str] = ()) -> None:
        """Admits label values (at start: the configured models and tasks)."""
        self.models.update(models)
        self.tasks.update(tasks)

    def finished_call(self, model: str, task: str, method: str, code: str, latency_s: float) -> None:
        """Counts one finished RPC and observes its latency (labels already passed through the guards).

        The labelled children are kept: prometheus-client's `labels()` takes a lock and builds a key per
        call, which bench/unary_peers.py's profile showed as 6% of a busy server's samples; the label
        guards bound this cache like the series themselves.
        """
        key = (model, task, method, code)
        children = self._call_children.get(key)
        if children is None:
            children = self.requests.labels(*key), self.request_latency.labels(model, task, method)
            self._call_children[key] = children
        children[0].inc()
        children[1].observe(latency_s)

    def model_label(self, name: str) -> str:
        return name if name in self.models else UNKNOWN

    def task_label(self, task: str) -> str:
        return task if task in self.tasks else UNKNOWN

    def serve(self, port: int, addr: str = "0.0.0.0", certfile: str = "", keyfile: str = "") -> int:
        """Exposes /metrics on its own port (HTTPS with a certificate and key); returns the port bound
        (0 picks a free one)."""
        server, _ = start_http_server(
            port,
            addr=addr.strip("[]"),
            registry=self.registry,
            certfile=certfile or None,
            keyfile=keyfile or None,
        )
        return int(server.server_port)

    def value(self, name: str, labels: dict[str, str]) -> float:
        """Current value of a sample, 0 when absent (for tests and the CLI)."""
        got = self.registry.get_sample_value(name, labels)
        return 0.0 if got is None else got
