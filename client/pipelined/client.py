"""The synchronous client: one channel, the generated stubs, and `pipeline(task)`."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from . import _channel, _transport
from .errors import DeadlineExceeded, PipelinedError, Unavailable
from .pipelines.registry import make_pipeline, resolve
from .v1 import models_pb2

DEFAULT_TARGET = _transport.DEFAULT_TARGET
CHANNEL_OPTIONS = _transport.CHANNEL_OPTIONS
# How long the probe behind wait_for_ready may take (it only reads the model table).
PROBE_TIMEOUT_S = 5.0


def readiness_of(served: list[dict[str, Any]]) -> _transport.Readiness:
    """STARTING while a model among these loads, READY once one is served, else NOT_STARTING."""
    states = {m["state"] for m in served}
    if "loading" in states:
        return _transport.Readiness.STARTING
    if "ready" in states:
        return _transport.Readiness.READY
    return _transport.Readiness.NOT_STARTING


def waited_for(model: str, task: str) -> str:
    served = f"model {model!r}" if model else f"its {task} models" if task else "its models"
    return f"the server to start and {served} to load"


def model_dict(info: models_pb2.ModelInfo) -> dict[str, Any]:
    return {
        "name": info.name,
        "task": info.task,
        "source": info.source,
        "device": info.device,
        "dtype": info.dtype,
        "state": models_pb2.ModelState.Name(info.state).removeprefix("MODEL_STATE_").lower(),
        "error": info.error,
        "sampling_rate": info.sampling_rate_hertz,
        "default": info.is_default,
        "max_batch_size": info.max_batch_size,
        "accepted_parameters": list(info.accepted_parameters),
        # What the model costs and where its parts live (see ModelInfo in models.proto).
        "weight_bytes": {w.device: w.bytes for w in info.weights},
        "resident_bytes_after_load": info.resident_bytes_after_load,
        "device_map": {p.module: p.device for p in info.device_map},
        "replica_devices": list(info.replica_devices),
    }


class Client:
    """`Client("host:port").pipeline(task)` behaves like `transformers.pipeline(task)`."""

    # The service stubs (see `_transport.STUBS`), attached to the channel at construction.
    speech: Any
    models_stub: Any
    health_stub: Any
    text: Any
    generic: Any
    vision: Any
    multimodal: Any
    audio_tasks: Any

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        channel: grpc.Channel | None = None,
        strict: bool = False,
        wait_for_ready: bool | float = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token: str | None = None,
        tls: bool = False,
    ):
        """`target`: `host:port`, or several addresses to spread calls over round-robin
        (`dns:///name:port` resolving to every replica, `ipv4:10.0.0.1:50051,10.0.0.2:50051`); unary
        calls a replica could not serve (UNAVAILABLE, RESOURCE_EXHAUSTED) are retried on the next.
        TLS: `ca_file` (the server's CA) or `tls=True` (system roots); `cert_file`/`key_file`: a
        client certificate (mutual TLS); `token`: a bearer token sent with every call."""
        self.target = target
        # Deadline of each call, in seconds (None: none); a call's own `timeout=` overrides it.
        self.timeout = timeout
        # A call made while the server starts or its model loads waits, retried with backoff, up to this many
        # seconds (True: 30 s; False or 0: fails at once with UNAVAILABLE).
        self.wait_for_ready = _transport.wait_bound(wait_for_ready)
        # strict: placement/loading arguments the served model does not match raise instead of warning.
        self.strict = strict
        self.security = _channel.Security(ca_file, cert_file, key_file, token, tls)
        self.channel = channel or _channel.open_channel(target, self.security)
        _transport.attach_stubs(self, self.channel)

    def pipeline(self, task: str | None = None, model: str | None = None, **defaults: Any) -> Any:
        """A typed pipeline for tasks with a typed call; the generic call for every other task.

        As `transformers.pipeline()`: `pipeline(model=NAME)` takes the served model's task,
        `pipeline(task)` the server's default model for it. Placement and loading arguments (`device`,
        `device_map`, `torch_dtype`/`dtype`, `model_kwargs`, `trust_remote_code`, `revision`) are
        checked against the served model and warn on a mismatch (raise ValueError when strict)."""
        task, rest = resolve(task, model, defaults, self.served_model, self.strict)
        return make_pipeline(self, task, model, rest)

    def served_model(self, task: str | None, model: str | None) -> dict[str, Any]:
        """The named model, or the server's default model for the task."""
        if model:
            return self.model(model)
        served = self.models(task or "")
        for info in served:
            if info["default"]:
                return info
        if served:
            return served[0]
        raise ValueError(f"the server at {self.target} serves no model for task {task!r}")

    def waiting(self, model: str, task: str) -> _transport.Waiting | None:
        """How a call to `model` (or the task's default model) waits while the server starts or it loads."""
        if not self.wait_for_ready:
            return None
        return _transport.Waiting(
            self.wait_for_ready, lambda: self.readiness(model, task), waited_for(model, task)
        )

    def readiness(self, model: str, task: str) -> _transport.Readiness:
        """After UNAVAILABLE: STARTING while the server cannot be reached yet or the model (any model of the
        task, for the default model) is still loading; READY once it is served; NOT_STARTING for a model
        that failed to load or a draining server."""
        try:
            if model:
                got = _transport.call(
                    self.models_stub.GetModel, models_pb2.GetModelRequest(name=model), PROBE_TIMEOUT_S
                )
                served = [model_dict(got.model)]
            else:
                listed = _transport.call(
                    self.models_stub.ListModels, models_pb2.ListModelsRequest(task=task), PROBE_TIMEOUT_S
                )
                served = [model_dict(m) for m in listed.models]
        except (Unavailable, DeadlineExceeded):  # not up yet, or too busy starting to answer
            return _transport.Readiness.STARTING
        except PipelinedError:
            return _transport.Readiness.NOT_STARTING
        return readiness_of(served)

    def models(self, task: str = "") -> list[dict[str, Any]]:
        request = models_pb2.ListModelsRequest(task=task)
        waiting = self.waiting("", task)
        response = _transport.call(self.models_stub.ListModels, request, self.timeout, waiting)
        return [model_dict(m) for m in response.models]

    def model(self, name: str) -> dict[str, Any]:
        request = models_pb2.GetModelRequest(name=name)
        response = _transport.call(self.models_stub.GetModel, request, self.timeout, self.waiting(name, ""))
        return model_dict(response.model)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING or SERVICE_UNKNOWN for the server ("") or one model by name; answers at once
        (never waits for readiness: that is what it reports)."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = _transport.call(self.health_stub.Check, request, self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
