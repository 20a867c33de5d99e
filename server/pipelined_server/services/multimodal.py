"""MultimodalService: unary RPCs are the shared path (unary.py) with their task's adapter
(tasks/image_text.py, tasks/document_qa.py); streaming generation reuses the adapter's steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from pipelined.v1 import multimodal_pb2, multimodal_pb2_grpc

from ..tasks import document_qa, image_text
from .calls import CallInfo, rpc
from .unary import Servicer


class MultimodalServicer(Servicer, multimodal_pb2_grpc.MultimodalServiceServicer):
    @rpc(image_text.TASK)
    async def GenerateFromImage(
        self,
        request: multimodal_pb2.GenerateFromImageRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> multimodal_pb2.GenerateFromImageResponse:
        return await self.unary(image_text.ADAPTER, request, context, call)

    @rpc(image_text.TASK)
    async def StreamGenerateFromImage(
        self,
        request: multimodal_pb2.StreamGenerateFromImageRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> AsyncIterator[multimodal_pb2.StreamGenerateFromImageResponse]:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = image_text.call_kwargs(request.generation, request, self.state.config.limits)
        (item,) = await asyncio.to_thread(
            image_text.prompt_items, [request.prompt], kwargs, self.state.config
        )
        async for piece in image_text.stream_text(instance, item, kwargs, context.time_remaining()):
            yield multimodal_pb2.StreamGenerateFromImageResponse(text=piece, model=instance.name)

    @rpc(document_qa.TASK)
    async def AnswerDocumentQuestion(
        self,
        request: multimodal_pb2.AnswerDocumentQuestionRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> multimodal_pb2.AnswerDocumentQuestionResponse:
        return await self.unary(document_qa.ADAPTER, request, context, call)
