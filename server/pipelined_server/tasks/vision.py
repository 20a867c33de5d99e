"""Vision tasks: request options -> pipeline arguments, pipeline outputs -> protos.

Batching rule (why the keys below): classification, zero-shot classification and feature-extraction
processors resize (and crop) every image to one fixed size, so images of any size batch safely.
Detection, segmentation and depth processors may keep the aspect ratio and pad a batch to its largest
image (DETR, YOLOS, Mask2Former, DPT with `keep_aspect_ratio`), which changes the result, so only images
of the same size share a batch there.
"""

from __future__ import annotations

from typing import Any

from pipelined.v1 import vision_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from .encoding import float32_array, png_bytes
from .options import candidate_labels, positive
from .submit import Item

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
    """Padding processors: only images of equal size share a batch."""
    return [Item(image, key=("size", *image.size)) for image in images]


def detection_kwargs(request: vision_pb2.DetectObjectsRequest) -> dict[str, Any]:
    return {"threshold": request.threshold} if request.HasField("threshold") else {}


def zero_shot_detection_kwargs(
    request: vision_pb2.DetectObjectsZeroShotRequest, limits: InputLimits
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"candidate_labels": candidate_labels(request.candidate_labels, limits)}
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


def as_list(output: Any) -> list[Any]:
    """Pipelines return a bare dict instead of a one-element list in some cases (e.g. top_k=1)."""
    return output if isinstance(output, list) else [output]
