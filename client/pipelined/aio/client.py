"""The asyncio client: `await client.pipeline(task)(inputs)`."""

from __future__ import annotations

from typing import Any

from grpc_health.v1 import health_pb2

from .. import _channel, _transport
from ..client import PROBE_TIMEOUT_S, model_dict, readiness_of, waited_for
from ..errors import DeadlineExceeded, PipelinedError, Unavailable
from ..pipelines.registry import make_pipeline, resolve
from ..v1 import models_pb2
from .base import AsyncPipeline
from .registry import twin


class Client:
    """The asyncio twin of `pipelined.Client`."""

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
        target: str = _transport.DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        strict: bool = False,
        wait_for_ready: bool | float = True,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        token: str | None = None,
        tls: bool = False,
    ) -> None:
        """As `pipelined.Client`: the same targets (load balancing, retries) and credentials."""
        self.target = target
        self.timeout = timeout
        self.strict = strict
        self.wait_for_ready = _transport.wait_bound(wait_for_ready)
        self.security = _channel.Security(ca_file, cert_file, key_file, token, tls)
        self.channel = _channel.open_aio_channel(target, self.security)
        _transport.attach_stubs(self, self.channel)

    def pipeline(self, task: str | None = None, model: str | None = None, **defaults: Any) -> AsyncPipeline:
        """The twin of `pipelined.Client.pipeline(task)`: same tasks, inputs, arguments and results,
        awaited. The sync pipeline (made with this client's asyncio stubs) builds the requests and reads
        the responses.

        Without a task, or with placement arguments, it asks the server about the model first, over a
        short-lived synchronous channel (this method stays a plain call, as in the sync client)."""
        task, rest = resolve(task, model, defaults, self._served_model, self.strict)
        return twin(make_pipeline(self, task, model, rest))

    def _served_model(self, task: str | None, model: str | None) -> dict[str, Any]:
        from ..client import Client as SyncClient

        s = self.security
        with SyncClient(
            self.target,
            timeout=self.timeout,
            wait_for_ready=self.wait_for_ready,
            ca_file=s.ca_file,
            cert_file=s.cert_file,
            key_file=s.key_file,
            token=s.token,
            tls=s.tls,
        ) as client:
            return client.served_model(task, model)

    def waiting(self, model: str, task: str) -> _transport.Waiting | None:
        """As `pipelined.Client.waiting`; the probe is awaited."""
        if not self.wait_for_ready:
            return None
        return _transport.Waiting(
            self.wait_for_ready, lambda: self.readiness(model, task), waited_for(model, task)
        )

    async def readiness(self, model: str, task: str) -> _transport.Readiness:
        """As `pipelined.Client.readiness`."""
        try:
            if model:
                request = models_pb2.GetModelRequest(name=model)
                response = await _transport.acall(self.models_stub.GetModel, request, PROBE_TIMEOUT_S)
                served = [model_dict(response.model)]
            else:
                listed = await _transport.acall(
                    self.models_stub.ListModels, models_pb2.ListModelsRequest(task=task), PROBE_TIMEOUT_S
                )
                served = [model_dict(m) for m in listed.models]
        except (Unavailable, DeadlineExceeded):  # not up yet, or too busy starting to answer
            return _transport.Readiness.STARTING
        except PipelinedError:
            return _transport.Readiness.NOT_STARTING
        return readiness_of(served)

    async def models(self, task: str = "") -> list[dict[str, Any]]:
        request = models_pb2.ListModelsRequest(task=task)
        response = await _transport.acall(
            self.models_stub.ListModels, request, self.timeout, self.waiting("", task)
        )
        return [model_dict(m) for m in response.models]

    async def model(self, name: str) -> dict[str, Any]:
        request = models_pb2.GetModelRequest(name=name)
        response = await _transport.acall(
            self.models_stub.GetModel, request, self.timeout, self.waiting(name, "")
        )
        return model_dict(response.model)

    async def health(self, service: str = "") -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await _transport.acall(self.health_stub.Check, request, self.timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
