"""VisionService: proto in, proto out; tasks/vision.py does the rest."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from pipelined.v1 import vision_pb2, vision_pb2_grpc

from ..registry import ModelInstance
from ..tasks import options, vision
from ..tasks.encoding import class_scores, float32_array
from ..tasks.image_input import load_images
from ..tasks.submit import Item, run_items
from .calls import CallInfo, ServerState, rpc

Planner = Callable[[list[Any]], list[Item]]


class VisionServicer(vision_pb2_grpc.VisionServiceServicer):
    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def _run(
        self,
        request: Any,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
        kwargs_of: Callable[[Any], dict[str, Any]],
        plan: Planner,
    ) -> tuple[ModelInstance, list[Any]]:
        """Checks the model and options first (cheap), then decodes the images and runs them."""
        instance = self.state.registry.ready(request.model, call.task)
        call.model = instance.name
        kwargs = kwargs_of(request)
        images = await load_images(request.images, self.state.config.images, self.state.config.limits)
        return instance, await run_items(instance, plan(images), kwargs, context.time_remaining())

    @rpc(vision.IMAGE_CLASSIFICATION)
    async def ClassifyImage(
        self, request: vision_pb2.ClassifyImageRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.ClassifyImageResponse:
        instance, outputs = await self._run(
            request, context, call, options.classification_kwargs, vision.any_size
        )
        return vision_pb2.ClassifyImageResponse(
            results=[class_scores(vision.as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(vision.OBJECT_DETECTION)
    async def DetectObjects(
        self, request: vision_pb2.DetectObjectsRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.DetectObjectsResponse:
        instance, outputs = await self._run(request, context, call, vision.detection_kwargs, vision.same_size)
        return vision_pb2.DetectObjectsResponse(
            results=[vision.detected_objects(vision.as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(vision.ZERO_SHOT_IMAGE_CLASSIFICATION)
    async def ClassifyImageZeroShot(
        self,
        request: vision_pb2.ClassifyImageZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.ClassifyImageZeroShotResponse:
        instance, outputs = await self._run(
            request, context, call, options.zero_shot_classification_kwargs, vision.any_size
        )
        return vision_pb2.ClassifyImageZeroShotResponse(
            results=[class_scores(vision.as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(vision.ZERO_SHOT_OBJECT_DETECTION)
    async def DetectObjectsZeroShot(
        self,
        request: vision_pb2.DetectObjectsZeroShotRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.DetectObjectsZeroShotResponse:
        instance, outputs = await self._run(
            request, context, call, vision.zero_shot_detection_kwargs, vision.same_size
        )
        return vision_pb2.DetectObjectsZeroShotResponse(
            results=[vision.detected_objects(vision.as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(vision.IMAGE_SEGMENTATION)
    async def SegmentImage(
        self, request: vision_pb2.SegmentImageRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.SegmentImageResponse:
        instance, outputs = await self._run(
            request, context, call, vision.segmentation_kwargs, vision.same_size
        )
        return vision_pb2.SegmentImageResponse(
            results=[vision.segments(vision.as_list(o)) for o in outputs], model=instance.name
        )

    @rpc(vision.DEPTH_ESTIMATION)
    async def EstimateDepth(
        self, request: vision_pb2.EstimateDepthRequest, context: grpc.aio.ServicerContext, call: CallInfo
    ) -> vision_pb2.EstimateDepthResponse:
        instance, outputs = await self._run(request, context, call, lambda r: {}, vision.same_size)
        return vision_pb2.EstimateDepthResponse(
            results=[vision.depth(o) for o in outputs], model=instance.name
        )

    @rpc(vision.IMAGE_FEATURE_EXTRACTION)
    async def ExtractImageFeatures(
        self,
        request: vision_pb2.ExtractImageFeaturesRequest,
        context: grpc.aio.ServicerContext,
        call: CallInfo,
    ) -> vision_pb2.ExtractImageFeaturesResponse:
        instance, outputs = await self._run(request, context, call, vision.feature_kwargs, vision.any_size)
        return vision_pb2.ExtractImageFeaturesResponse(
            results=[float32_array(o) for o in outputs], model=instance.name
        )
