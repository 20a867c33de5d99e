"""AudioService: each RPC is the shared unary path (unary.py) with its task's adapter (tasks/audio_tasks.py)."""

from __future__ import annotations

import grpc
from pipelined.v1 import audio_tasks_pb2, audio_tasks_pb2_grpc

from ..tasks import audio_tasks
from .calls import CallInfo, rpc
from .unary import Servicer


class AudioServicer(Servicer, audio_tasks_pb2_grpc.AudioServiceServicer):
    @rpc(audio_tasks.AUDIO_CLASSIFICATION)
    async def ClassifyAudio(
        self, request: audio_tasks_pb2.ClassifyAudioRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> audio_tasks_pb2.ClassifyAudioResponse:
        return await self.unary(audio_tasks.AUDIO_CLASSIFICATION_ADAPTER, request, context, call)

    @rpc(audio_tasks.ZERO_SHOT_AUDIO_CLASSIFICATION)
    async def ClassifyAudioZeroShot(
        self,
        request: audio_tasks_pb2.ClassifyAudioZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> audio_tasks_pb2.ClassifyAudioZeroShotResponse:
        return await self.unary(audio_tasks.ZERO_SHOT_AUDIO_CLASSIFICATION_ADAPTER, request, context, call)

    @rpc(audio_tasks.TEXT_TO_AUDIO)
    async def GenerateAudio(
        self, request: audio_tasks_pb2.GenerateAudioRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> audio_tasks_pb2.GenerateAudioResponse:
        return await self.unary(audio_tasks.TEXT_TO_AUDIO_ADAPTER, request, context, call)
