"""The asyncio client: `await client.pipeline(task)(inputs)`."""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ..client import CHANNEL_OPTIONS, DEFAULT_TARGET, make_pipeline, model_dict
from ..errors import from_rpc_error
from ..v1 import (
    audio_tasks_pb2_grpc,
    generic_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    multimodal_pb2_grpc,
    speech_pb2_grpc,
    text_pb2_grpc,
    vision_pb2_grpc,
)
from .task_pipeline import AsyncPipeline


class Client:
    def __init__(self, target: str = DEFAULT_TARGET, *, timeout: float | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.speech = speech_pb2_grpc.SpeechServiceStub(self.channel)
        self.models_stub = models_pb2_grpc.ModelsServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.text = text_pb2_grpc.TextServiceStub(self.channel)
        self.generic = generic_pb2_grpc.GenericServiceStub(self.channel)
        self.vision = vision_pb2_grpc.VisionServiceStub(self.channel)
        self.multimodal = multimodal_pb2_grpc.MultimodalServiceStub(self.channel)
        self.audio_tasks = audio_tasks_pb2_grpc.AudioServiceStub(self.channel)

    def pipeline(self, task: str, model: str | None = None, **defaults: Any) -> Any:
        """The twin of `pipelined.Client.pipeline(task)`: same tasks, inputs, arguments and results,
        awaited. The sync pipeline (made with this client's asyncio stubs) builds the requests and reads
        the responses."""
        return twin(make_pipeline(self, task, model, defaults))

    async def models(self, task: str = "") -> list[dict[str, Any]]:
        try:
            response = await self.models_stub.ListModels(
                models_pb2.ListModelsRequest(task=task), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return [model_dict(m) for m in response.models]

    async def model(self, name: str) -> dict[str, Any]:
        try:
            response = await self.models_stub.GetModel(
                models_pb2.GetModelRequest(name=name), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return model_dict(response.model)

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


def twin(sync: Any) -> AsyncPipeline:
    """The asyncio twin of a sync pipeline (most specific class first)."""
    from ..generic import GenericPipeline
    from ..multimodal import ImageTextToTextPipeline
    from ..pipeline import SpeechRecognitionPipeline
    from ..task_pipeline import TaskPipeline
    from ..text_pipeline import TextGenerationPipeline, TextPipeline
    from .generic import AsyncGenericPipeline
    from .multimodal import AsyncImageTextToTextPipeline
    from .pipeline import AsyncSpeechRecognitionPipeline
    from .task_pipeline import AsyncTaskPipeline
    from .text_pipeline import AsyncTextGenerationPipeline, AsyncTextPipeline

    twins: list[tuple[type, type[AsyncPipeline]]] = [
        (SpeechRecognitionPipeline, AsyncSpeechRecognitionPipeline),
        (ImageTextToTextPipeline, AsyncImageTextToTextPipeline),
        (TaskPipeline, AsyncTaskPipeline),
        (TextGenerationPipeline, AsyncTextGenerationPipeline),
        (TextPipeline, AsyncTextPipeline),
        (GenericPipeline, AsyncGenericPipeline),
    ]
    return next(cls(sync) for base, cls in twins if isinstance(sync, base))
