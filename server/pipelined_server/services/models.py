"""ModelsService: what is served, where, and in which state."""

from __future__ import annotations

import grpc
from pipelined.v1 import models_pb2, models_pb2_grpc

from .. import security
from ..registry import ModelInstance, ModelState
from ..tasks.durations import to_duration
from ..tasks.parameters import accepted_parameters
from .calls import CallInfo, ServerState, rpc

_STATES = {
    ModelState.LOADING: models_pb2.MODEL_STATE_LOADING,
    ModelState.READY: models_pb2.MODEL_STATE_READY,
    ModelState.FAILED: models_pb2.MODEL_STATE_FAILED,
}


def model_info(instance: ModelInstance) -> models_pb2.ModelInfo:
    spec = instance.spec
    return models_pb2.ModelInfo(
        name=spec.name,
        task=spec.task,
        source=spec.source,
        device=instance.device or spec.device,
        dtype=instance.dtype or spec.dtype,
        state=_STATES[instance.state],
        error=instance.error,
        sampling_rate_hertz=instance.sampling_rate,
        accepted_parameters=accepted_parameters(spec.task),
        load_duration=to_duration(instance.load_seconds),
        max_batch_size=(instance.batching or spec.batching).max_batch_size,
        is_default=instance.is_default,
        weights=[models_pb2.DeviceWeights(device=d, bytes=n) for d, n in instance.weight_bytes.items()],
        resident_bytes_after_load=instance.resident_bytes,
        device_map=[models_pb2.ModulePlacement(module=m, device=d) for m, d in instance.placements],
        replica_devices=instance.replica_devices,
    )


class ModelsServicer(models_pb2_grpc.ModelsServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc("models")
    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> models_pb2.ListModelsResponse:
        instances = [i for i in self.state.registry.instances.values() if security.visible(i.name)]
        return models_pb2.ListModelsResponse(
            models=[model_info(i) for i in instances if not request.task or i.spec.task == request.task]
        )

    @rpc("models")
    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> models_pb2.GetModelResponse:
        call.model = request.name
        return models_pb2.GetModelResponse(model=model_info(self.state.registry.find(request.name)))
