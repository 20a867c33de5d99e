"""VisionService: each RPC is the shared unary path (unary.py) with its task's adapter (tasks/vision.py)."""

from __future__ import annotations

import grpc
from pipelined.v1 import vision_pb2, vision_pb2_grpc

from ..tasks import vision
from .calls import CallInfo, rpc
from .unary import Servicer


class VisionServicer(Servicer, vision_pb2_grpc.VisionServiceServicer):
    @rpc(vision.IMAGE_CLASSIFICATION)
    async def ClassifyImage(
        self, request: vision_pb2.ClassifyImageRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.ClassifyImageResponse:
        return await self.unary(vision.IMAGE_CLASSIFICATION_ADAPTER, request, context, call)

    @rpc(vision.OBJECT_DETECTION)
    async def DetectObjects(
        self, request: vision_pb2.DetectObjectsRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.DetectObjectsResponse:
        return await self.unary(vision.OBJECT_DETECTION_ADAPTER, request, context, call)

    @rpc(vision.ZERO_SHOT_IMAGE_CLASSIFICATION)
    async def ClassifyImageZeroShot(
        self,
        request: vision_pb2.ClassifyImageZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.ClassifyImageZeroShotResponse:
        return await self.unary(vision.ZERO_SHOT_IMAGE_CLASSIFICATION_ADAPTER, request, context, call)

    @rpc(vision.ZERO_SHOT_OBJECT_DETECTION)
    async def DetectObjectsZeroShot(
        self,
        request: vision_pb2.DetectObjectsZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.DetectObjectsZeroShotResponse:
        return await self.unary(vision.ZERO_SHOT_OBJECT_DETECTION_ADAPTER, request, context, call)

    @rpc(vision.IMAGE_SEGMENTATION)
    async def SegmentImage(
        self, request: vision_pb2.SegmentImageRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.SegmentImageResponse:
        return await self.unary(vision.IMAGE_SEGMENTATION_ADAPTER, request, context, call)

    @rpc(vision.DEPTH_ESTIMATION)
    async def EstimateDepth(
        self, request: vision_pb2.EstimateDepthRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.EstimateDepthResponse:
        return await self.unary(vision.DEPTH_ESTIMATION_ADAPTER, request, context, call)

    @rpc(vision.IMAGE_FEATURE_EXTRACTION)
    async def ExtractImageFeatures(
        self,
        request: vision_pb2.ExtractImageFeaturesRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.ExtractImageFeaturesResponse:
        return await self.unary(vision.IMAGE_FEATURE_EXTRACTION_ADAPTER, request, context, call)
