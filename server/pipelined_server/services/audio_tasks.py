"""AudioService: proto in, proto out; tasks/audio_tasks.py does the rest."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from pipelined.v1 import audio_tasks_pb2, audio_tasks_pb2_grpc

from ..registry import ModelInstance
from ..tasks import audio_tasks, options
from ..tasks.audio_input import decode_audio_input_async
from ..tasks.encoding import class_scores
from ..tasks.image_input import check_count
from ..tasks.submit import run_items
from ..tasks.vision import as_list
from .calls import CallInfo, ServerState, rpc


class AudioServicer(audio_tasks_pb2_grpc.AudioServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _classify(
        self, request: Any, context: grpc.aio.ServicerContext, call: CallInfo, kwargs: dict[str, Any]
    ) -> tuple[ModelInstance, list[Any]]:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        check_count(len(request.audios), "audio clips", self.state.config.limits)
        rate, limits = instance.sampling_rate, self.state.config.audio
        clips = await asyncio.gather(*(decode_audio_input_async(a, rate, limits) for a in request.audios))
        items = audio_tasks.same_length(list(clips))
        return instance, await run_items(instance, items, kwargs, context.time_remaining())

    @rpc(audio_tasks.AUDIO_CLASSIFICATION)
    async def ClassifyAudio(
        self, request: audio_tasks_pb2.ClassifyAudioRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> audio_tasks_pb2.ClassifyAudioResponse:
        instance, outputs = await self._classify(
            request, context, call, options.classification_kwargs(request)
        )
        return audio_tasks_pb2.ClassifyAudioResponse(
            results=[class_scores(as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(audio_tasks.ZERO_SHOT_AUDIO_CLASSIFICATION)
    async def ClassifyAudioZeroShot(
        self,
        request: audio_tasks_pb2.ClassifyAudioZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> audio_tasks_pb2.ClassifyAudioZeroShotResponse:
        kwargs = options.zero_shot_classification_kwargs(request)
        instance, outputs = await self._classify(request, context, call, kwargs)
        return audio_tasks_pb2.ClassifyAudioZeroShotResponse(
            results=[class_scores(as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(audio_tasks.TEXT_TO_AUDIO)
    async def GenerateAudio(
        self, request: audio_tasks_pb2.GenerateAudioRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> audio_tasks_pb2.GenerateAudioResponse:
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = audio_tasks.generate_kwargs(request)
        check_count(len(request.texts), "texts", self.state.config.limits)
        outputs = await run_items(instance, audio_tasks.texts(request), kwargs, context.time_remaining())
        results = await asyncio.to_thread(lambda: [audio_tasks.generated_audio(o) for o in outputs])
        return audio_tasks_pb2.GenerateAudioResponse(results=results, model=instance.name)
