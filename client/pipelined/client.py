"""The synchronous client: one channel, the generated stubs, and `pipeline(task)`."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from . import _channel, _transport
from .pipelines.registry import make_pipeline, resolve
from .v1 import models_pb2

DEFAULT_TARGET = _transport.DEFAULT_TARGET
CHANNEL_OPTIONS = _transport.CHANNEL_OPTIONS


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
        self.timeout = timeout
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

    def models(self, task: str = "") -> list[dict[str, Any]]:
        request = models_pb2.ListModelsRequest(task=task)
        response = _transport.call(self.models_stub.ListModels, request, self.timeout)
        return [model_dict(m) for m in response.models]

    def model(self, name: str) -> dict[str, Any]:
        request = models_pb2.GetModelRequest(name=name)
        response = _transport.call(self.models_stub.GetModel, request, self.timeout)
        return model_dict(response.model)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING or SERVICE_UNKNOWN for the server ("") or one model by name."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = _transport.call(self.health_stub.Check, request, self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
