"""Vision tasks: request options -> pipeline arguments, pipeline outputs -> protos.

Batching rule (why the keys below): classification, zero-shot classification and feature-extraction
processors resize (and crop) every image to one fixed size, so images of any size batch safely.
Detection, segmentation and depth processors may keep the aspect ratio and pad a batch to its largest
image (DETR, YOLOS, Mask2Former, DPT with `keep_aspect_ratio`), which changes the result, so only images
of the same size share a batch there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pipelined.v1 import vision_pb2

from ..config import ServerConfig
from ..errors import InvalidInput
from ..registry import ModelInstance
from .adapter import Item, ResultPerInput
from .checks import check_count, positive
from .encoding import as_list, class_scores, float32_array, png_bytes
from .image_input import load_image_input
from .options import bounded_labels, candidate_labels, classification_kwargs, zero_shot_classification_kwargs

IMAGE_CLASSIFICATION = "image-classification"
OBJECT_DETECTION = "object-detection"
ZERO_SHOT_IMAGE_CLASSIFICATION = "zero-shot-image-classification"
ZERO_SHOT_OBJECT_DETECTION = "zero-shot-object-detection"
IMAGE_SEGMENTATION = "image-segmentation"
DEPTH_ESTIMATION = "depth-estimation"
IMAGE_FEATURE_EXTRACTION = "image-feature-extraction"

_SUBTASKS = {
    vision_pb2.SEGMENTATION_SUBTASK_PANOPTIC: "panoptic",
    vision_pb2.SEGMENTATION_SUBTASK_INSTANCE: "instance",
    vision_pb2.SEGMENTATION_SUBTASK_SEMANTIC: "semantic",
}


def any_size(images: list[Any]) -> list[Item]:
    """Fixed-size processors: every image may join any batch."""
    return [Item(image) for image in images]


def same_size(images: list[Any]) -> list[Item]:
    """Padding processors: only images of equal size share a batch. The size alone is the key: every key on
    such a model's scheduler comes from here, so a label would tell nothing apart."""
    return [Item(image, key=image.size) for image in images]


def detection_kwargs(request: vision_pb2.DetectObjectsRequest) -> dict[str, Any]:
    return {"threshold": request.threshold} if request.HasField("threshold") else {}


def zero_shot_detection_kwargs(request: vision_pb2.DetectObjectsZeroShotRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"candidate_labels": candidate_labels(request.candidate_labels)}
    if request.HasField("threshold"):
        kwargs["threshold"] = request.threshold
    if request.HasField("top_k"):
        kwargs["top_k"] = positive("top_k", request.top_k)
    return kwargs


def segmentation_kwargs(request: vision_pb2.SegmentImageRequest) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if request.subtask:
        if request.subtask not in _SUBTASKS:
            raise InvalidInput(f"unknown subtask value {request.subtask}")
        kwargs["subtask"] = _SUBTASKS[request.subtask]
    for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
        if request.HasField(name):
            kwargs[name] = getattr(request, name)
    return kwargs


def feature_kwargs(request: vision_pb2.ExtractImageFeaturesRequest) -> dict[str, Any]:
    # Tensors, not nested lists: the wire carries packed float32 either way, and lists are slow to build.
    kwargs: dict[str, Any] = {"return_tensors": True}
    if request.pool:
        kwargs["pool"] = True
    return kwargs


def detected_objects(outputs: list[dict[str, Any]]) -> vision_pb2.DetectedObjects:
    return vision_pb2.DetectedObjects(
        objects=[
            vision_pb2.DetectedObject(
                score=float(o["score"]),
                label=str(o["label"]),
                box=vision_pb2.PixelBox(**{k: int(v) for k, v in o["box"].items()}),
            )
            for o in outputs
        ]
    )


def segments(outputs: list[dict[str, Any]]) -> vision_pb2.ImageSegments:
    result = vision_pb2.ImageSegments()
    for o in outputs:
        segment = result.segments.add(label=str(o["label"]), mask_png=png_bytes(o["mask"]))
        if o.get("score") is not None:
            segment.score = float(o["score"])
    return result


def depth(output: dict[str, Any]) -> vision_pb2.DepthEstimate:
    return vision_pb2.DepthEstimate(
        depth_png=png_bytes(output["depth"]), predicted_depth=float32_array(output["predicted_depth"])
    )


def _no_options(request: Any) -> dict[str, Any]:
    return {}


class ImageTask(ResultPerInput):
    """One vision task: images in, one result each; `plan` is its batching rule (`any_size`, `same_size`)."""

    def __init__(
        self,
        task: str,
        response_type: Callable[..., Any],
        options: Callable[[Any], dict[str, Any]],
        plan: Callable[[list[Any]], list[Item]],
        result: Callable[[Any], Any],
        encodes: bool = False,
    ) -> None:
        super().__init__(task, response_type, options, result, encodes)
        self._plan = plan

    def arguments(self, request: Any, instance: ModelInstance, config: ServerConfig) -> dict[str, Any]:
        # Zero-shot: every label is one more forward pass per input.
        return bounded_labels(super().arguments(request, instance, config), config.limits)

    def items(
        self, request: Any, instance: ModelInstance, config: ServerConfig, kwargs: dict[str, Any]
    ) -> list[Item]:
        check_count(len(request.images), "images", config.limits)
        return self._plan([load_image_input(image, config.images) for image in request.images])


IMAGE_CLASSIFICATION_ADAPTER = ImageTask(
    IMAGE_CLASSIFICATION,
    vision_pb2.ClassifyImageResponse,
    classification_kwargs,
    any_size,
    lambda o: class_scores(as_list(o)),
)
OBJECT_DETECTION_ADAPTER = ImageTask(
    OBJECT_DETECTION,
    vision_pb2.DetectObjectsResponse,
    detection_kwargs,
    same_size,
    lambda o: detected_objects(as_list(o)),
)
ZERO_SHOT_IMAGE_CLASSIFICATION_ADAPTER = ImageTask(
    ZERO_SHOT_IMAGE_CLASSIFICATION,
    vision_pb2.ClassifyImageZeroShotResponse,
    zero_shot_classification_kwargs,
    any_size,
    lambda o: class_scores(as_list(o)),
)
ZERO_SHOT_OBJECT_DETECTION_ADAPTER = ImageTask(
    ZERO_SHOT_OBJECT_DETECTION,
    vision_pb2.DetectObjectsZeroShotResponse,
    zero_shot_detection_kwargs,
    same_size,
    lambda o: detected_objects(as_list(o)),
)
# Masks and depth maps travel as PNG: encoding them is blocking work.
IMAGE_SEGMENTATION_ADAPTER = ImageTask(
    IMAGE_SEGMENTATION,
    vision_pb2.SegmentImageResponse,
    segmentation_kwargs,
    same_size,
    lambda o: segments(as_list(o)),
    encodes=True,
)
DEPTH_ESTIMATION_ADAPTER = ImageTask(
    DEPTH_ESTIMATION, vision_pb2.EstimateDepthResponse, _no_options, same_size, depth, encodes=True
)
IMAGE_FEATURE_EXTRACTION_ADAPTER = ImageTask(
    IMAGE_FEATURE_EXTRACTION, vision_pb2.ExtractImageFeaturesResponse, feature_kwargs, any_size, float32_array
)
