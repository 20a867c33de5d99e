"""MultimodalService: proto in, proto out; tasks/image_text.py and tasks/document_qa.py do the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from pipelined.v1 import multimodal_pb2, multimodal_pb2_grpc

from ..tasks import document_qa, image_text
from ..tasks.image_input import check_count
from ..tasks.submit import run_items
from .calls import CallInfo, ServerState, rpc


class MultimodalServicer(multimodal_pb2_grpc.MultimodalServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    @rpc(image_text.TASK)
    async def GenerateFromImage(
        self,
        request: multimodal_pb2.GenerateFromImageRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> multimodal_pb2.GenerateFromImageResponse:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = image_text.call_kwargs(request.generation, request)
        check_count(len(request.prompts), "prompts", self.state.config.limits)
        items = await image_text.load_prompts(
            list(request.prompts), kwargs, self.state.config.images, self.state.config.limits
        )
        outputs = await run_items(instance, items, kwargs, context.time_remaining())
        return multimodal_pb2.GenerateFromImageResponse(
            results=[
                multimodal_pb2.GeneratedImageText(generated_text=image_text.generated_text(o))
                for o in outputs
            ],
            model=instance.name,
        )

    @rpc(image_text.TASK)
    async def StreamGenerateFromImage(
        self,
        request: multimodal_pb2.StreamGenerateFromImageRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> AsyncIterator[multimodal_pb2.StreamGenerateFromImageResponse]:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = image_text.call_kwargs(request.generation, request)
        (item,) = await image_text.load_prompts(
            [request.prompt], kwargs, self.state.config.images, self.state.config.limits
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
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = document_qa.call_kwargs(request)
        items = await document_qa.load_questions(request, self.state.config.images, self.state.config.limits)
        outputs = await run_items(instance, items, kwargs, context.time_remaining())
        return multimodal_pb2.AnswerDocumentQuestionResponse(
            results=[document_qa.answers(o) for o in outputs], model=instance.name
        )
