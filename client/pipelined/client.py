"""The synchronous client: one channel, the generated stubs, and `pipeline(task)`."""

from __future__ import annotations

from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from .errors import from_rpc_error
from .v1 import (
    audio_tasks_pb2_grpc,
    generic_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    multimodal_pb2_grpc,
    speech_pb2_grpc,
    text_pb2_grpc,
    vision_pb2_grpc,
)

DEFAULT_TARGET = "localhost:50051"
# Audio files can be large; match the server's default limit.
CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


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
    }


class Stubs(Protocol):
    """What pipelines use of a client: the service stubs and the call timeout. The synchronous and the
    asyncio client both have them, so one pipeline class builds requests and reads responses for both."""

    timeout: float | None
    speech: Any
    text: Any
    generic: Any
    vision: Any
    multimodal: Any
    audio_tasks: Any


def make_pipeline(client: Stubs, task: str, model: str | None, defaults: dict[str, Any]) -> Any:
    """A typed pipeline for tasks with a typed call; the generic call for every other task."""
    from .generic import GenericPipeline
    from .pipeline import SpeechRecognitionPipeline
    from .task_pipelines import PIPELINES as TASK_PIPELINES
    from .text_pipeline import ALIASES, PIPELINES

    task = ALIASES.get(task, task)
    if task == SpeechRecognitionPipeline.task:
        return SpeechRecognitionPipeline(client, model, **defaults)
    if task in PIPELINES:
        return PIPELINES[task](client, model, **defaults)
    if task in TASK_PIPELINES:
        return TASK_PIPELINES[task](client, model, **defaults)
    return GenericPipeline(client, task, model, **defaults)


class Client:
    """`Client("host:port").pipeline(task)` behaves like `transformers.pipeline(task)`."""

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        *,
        timeout: float | None = None,
        channel: grpc.Channel | None = None,
    ):
        self.target = target
        self.timeout = timeout
        self.channel = channel or grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        self.speech = speech_pb2_grpc.SpeechServiceStub(self.channel)
        self.models_stub = models_pb2_grpc.ModelsServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)
        self.text = text_pb2_grpc.TextServiceStub(self.channel)
        self.generic = generic_pb2_grpc.GenericServiceStub(self.channel)
        self.vision = vision_pb2_grpc.VisionServiceStub(self.channel)
        self.multimodal = multimodal_pb2_grpc.MultimodalServiceStub(self.channel)
        self.audio_tasks = audio_tasks_pb2_grpc.AudioServiceStub(self.channel)

    def pipeline(self, task: str, model: str | None = None, **defaults: Any) -> Any:
        """A typed pipeline for tasks with a typed call; the generic call for every other task."""
        return make_pipeline(self, task, model, defaults)

    def models(self, task: str = "") -> list[dict[str, Any]]:
        try:
            response = self.models_stub.ListModels(
                models_pb2.ListModelsRequest(task=task), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return [model_dict(m) for m in response.models]

    def model(self, name: str) -> dict[str, Any]:
        try:
            response = self.models_stub.GetModel(models_pb2.GetModelRequest(name=name), timeout=self.timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return model_dict(response.model)

    def health(self, service: str = "") -> str:
        """SERVING, NOT_SERVING or SERVICE_UNKNOWN for the server ("") or one model by name."""
        try:
            response = self.health_stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=self.timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
