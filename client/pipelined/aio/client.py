"""The asyncio client: `await client.pipeline(task)(inputs)`."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..client import CHANNEL_OPTIONS, DEFAULT_TARGET, model_dict
from ..errors import from_rpc_error
from ..v1 import models_pb2, models_pb2_grpc, speech_pb2_grpc


class Client:
    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.speech = speech_pb2_grpc.SpeechServiceStub(self.channel)
        self.models_stub = models_pb2_grpc.ModelsServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def pipeline(self, task: str, model: str | None = None, **defaults: Any) -> Any:
        from .pipeline import SpeechRecognitionPipeline

        if task == SpeechRecognitionPipeline.task:
            return SpeechRecognitionPipeline(self, model, **defaults)
        raise ValueError(f"task {task!r} is not supported by this client version")

    async def models(self, task: str = "") -> list[dict[str, Any]]:
        try:
            response = await self.models_stub.ListModels(
                models_pb2.ListModelsRequest(task=task), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return [model_dict(m) for m in response.models]

    async def health(self, service: str = "") -> str:
        try:
            response = await self.health_stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
