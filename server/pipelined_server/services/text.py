"""TextService: proto in, proto out; the task adapters in tasks/ do the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from pipelined.v1 import text_pb2, text_pb2_grpc

from ..errors import InvalidInput
from ..registry import ModelInstance
from ..tasks import (
    feature_extraction,
    fill_mask,
    text_classification,
    text_generation,
    token_classification,
    zero_shot,
)
from ..tasks.generation_stream import stream_generation
from .calls import CallInfo, ServerState, rpc


class TextServicer(text_pb2_grpc.TextServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    def _model(self, name: str, call: CallInfo) -> ModelInstance:
        instance = self.state.registry.ready(name, call.task)
        call.model = instance.name
        return instance

    @rpc(text_classification.TASK)
    async def ClassifyText(
        self, request: text_pb2.ClassifyTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyTextResponse:
        instance = self._model(request.model, call)
        return await text_classification.classify(
            instance, request, self.state.config.limits, context.time_remaining()
        )

    @rpc(token_classification.TASK)
    async def ClassifyTokens(
        self, request: text_pb2.ClassifyTokensRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyTokensResponse:
        instance = self._model(request.model, call)
        return await token_classification.classify(
            instance, request, self.state.config.limits, context.time_remaining()
        )

    @rpc(fill_mask.TASK)
    async def FillMask(
        self, request: text_pb2.FillMaskRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.FillMaskResponse:
        instance = self._model(request.model, call)
        return await fill_mask.fill(instance, request, self.state.config.limits, context.time_remaining())

    @rpc(feature_extraction.TASK)
    async def ExtractFeatures(
        self, request: text_pb2.ExtractFeaturesRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ExtractFeaturesResponse:
        instance = self._model(request.model, call)
        return await feature_extraction.extract(
            instance, request, self.state.config.limits, context.time_remaining()
        )

    @rpc(zero_shot.TASK)
    async def ClassifyZeroShot(
        self, request: text_pb2.ClassifyZeroShotRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyZeroShotResponse:
        instance = self._model(request.model, call)
        return await zero_shot.classify(instance, request, self.state.config.limits, context.time_remaining())

    @rpc(text_generation.TASK)
    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.GenerateTextResponse:
        instance = self._model(request.model, call)
        return await text_generation.generate(
            instance, request, self.state.config.limits, context.time_remaining()
        )

    @rpc(text_generation.TASK)
    async def StreamGenerateText(
        self, request: text_pb2.StreamGenerateTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> AsyncIterator[text_pb2.StreamGenerateTextResponse]:
        instance = self._model(request.model, call)
        prompt = text_generation.prompt_of(request.input, self.state.config.limits, "input")
        generation = text_generation.call_kwargs(request.parameters, instance)
        if generation.kwargs.get("num_return_sequences", 1) != 1:
            raise InvalidInput("streaming generates one sequence: num_return_sequences must be 1")
        async for piece in stream_generation(
            instance, prompt, generation.kwargs, generation.seed, context.time_remaining()
        ):
            yield text_pb2.StreamGenerateTextResponse(text=piece, model=instance.name)
