"""TextService: each unary RPC is the shared path (unary.py) with its task's adapter (tasks/)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from pipelined.v1 import text_pb2, text_pb2_grpc

from ..errors import InvalidInput
from ..tasks import (
    feature_extraction,
    fill_mask,
    text_classification,
    text_generation,
    token_classification,
    zero_shot,
)
from ..tasks.generation_stream import stream_generation
from .calls import CallInfo, rpc
from .unary import Servicer


class TextServicer(Servicer, text_pb2_grpc.TextServiceServicer):
    @rpc(text_classification.TASK)
    async def ClassifyText(
        self, request: text_pb2.ClassifyTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyTextResponse:
        return await self.unary(text_classification.ADAPTER, request, context, call)

    @rpc(token_classification.TASK)
    async def ClassifyTokens(
        self, request: text_pb2.ClassifyTokensRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyTokensResponse:
        return await self.unary(token_classification.ADAPTER, request, context, call)

    @rpc(fill_mask.TASK)
    async def FillMask(
        self, request: text_pb2.FillMaskRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.FillMaskResponse:
        return await self.unary(fill_mask.ADAPTER, request, context, call)

    @rpc(feature_extraction.TASK)
    async def ExtractFeatures(
        self, request: text_pb2.ExtractFeaturesRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ExtractFeaturesResponse:
        return await self.unary(feature_extraction.ADAPTER, request, context, call)

    @rpc(zero_shot.TASK)
    async def ClassifyZeroShot(
        self, request: text_pb2.ClassifyZeroShotRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.ClassifyZeroShotResponse:
        return await self.unary(zero_shot.ADAPTER, request, context, call)

    @rpc(text_generation.TASK)
    async def GenerateText(
        self, request: text_pb2.GenerateTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> text_pb2.GenerateTextResponse:
        return await self.unary(text_generation.ADAPTER, request, context, call)

    @rpc(text_generation.TASK)
    async def StreamGenerateText(
        self, request: text_pb2.StreamGenerateTextRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> AsyncIterator[text_pb2.StreamGenerateTextResponse]:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        prompt = text_generation.prompt_of(request.input, self.state.config.limits, "input")
        generation = text_generation.call_kwargs(request.parameters, instance, self.state.config.limits)
        if generation.kwargs.get("num_return_sequences", 1) != 1:
            raise InvalidInput("streaming generates one sequence: num_return_sequences must be 1")
        async for piece in stream_generation(
            instance, prompt, generation.kwargs, generation.seed, context.time_remaining()
        ):
            yield text_pb2.StreamGenerateTextResponse(text=piece, model=instance.name)
