"""Vision pipelines over gRPC, returning what the transformers pipelines return for the same call.

Where a value cannot cross the wire as the pipeline's own type, the nearest one is returned: numpy
arrays for torch tensors (depth's `predicted_depth`, features with `return_tensors=True`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..v1 import vision_pb2
from ..wire.images import array_from_float32, image_input, is_single_image, pil_from_png
from ..wire.labels import label_scores, logit_function
from .base import RemotePipeline

_SUBTASKS = {
    None: vision_pb2.SEGMENTATION_SUBTASK_UNSPECIFIED,
    "panoptic": vision_pb2.SEGMENTATION_SUBTASK_PANOPTIC,
    "instance": vision_pb2.SEGMENTATION_SUBTASK_INSTANCE,
    "semantic": vision_pb2.SEGMENTATION_SUBTASK_SEMANTIC,
}


def detected(objects: vision_pb2.DetectedObjects) -> list[dict[str, Any]]:
    return [
        {
            "score": o.score,
            "label": o.label,
            "box": {"xmin": o.box.xmin, "ymin": o.box.ymin, "xmax": o.box.xmax, "ymax": o.box.ymax},
        }
        for o in objects.objects
    ]


class ImagePipeline(RemotePipeline):
    """Inputs are images; `timeout` (the pipeline's URL timeout) is accepted and unused: URLs are fetched here."""

    def is_single(self, inputs: Any) -> bool:
        return is_single_image(inputs)

    def stub(self) -> Any:
        return self.client.vision


class ImageClassificationPipeline(ImagePipeline):
    task = "image-classification"
    accepted = frozenset({"top_k", "function_to_apply", "timeout"})

    def method(self) -> Callable[..., Any]:
        return self.stub().ClassifyImage

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.ClassifyImageRequest:
        request = vision_pb2.ClassifyImageRequest(
            model=self.model,
            images=[image_input(inputs)],
            function_to_apply=logit_function(kwargs.get("function_to_apply")),
        )
        if kwargs.get("top_k") is not None:
            request.top_k = int(kwargs["top_k"])
        return request

    def read_results(
        self, response: vision_pb2.ClassifyImageResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [label_scores(response.results[0], score_first=False)]


class ObjectDetectionPipeline(ImagePipeline):
    task = "object-detection"
    accepted = frozenset({"threshold", "timeout"})

    def method(self) -> Callable[..., Any]:
        return self.stub().DetectObjects

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.DetectObjectsRequest:
        request = vision_pb2.DetectObjectsRequest(model=self.model, images=[image_input(inputs)])
        if kwargs.get("threshold") is not None:
            request.threshold = float(kwargs["threshold"])
        return request

    def read_results(
        self, response: vision_pb2.DetectObjectsResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [detected(response.results[0])]


class ZeroShotImageClassificationPipeline(ImagePipeline):
    task = "zero-shot-image-classification"
    accepted = frozenset({"candidate_labels", "hypothesis_template", "timeout"})

    def method(self) -> Callable[..., Any]:
        return self.stub().ClassifyImageZeroShot

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.ClassifyImageZeroShotRequest:
        labels = kwargs.get("candidate_labels") or []
        return vision_pb2.ClassifyImageZeroShotRequest(
            model=self.model,
            images=[image_input(inputs)],
            candidate_labels=[labels] if isinstance(labels, str) else list(labels),
            hypothesis_template=kwargs.get("hypothesis_template") or "",
        )

    def read_results(
        self, response: vision_pb2.ClassifyImageZeroShotResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [label_scores(response.results[0], score_first=True)]


class ZeroShotObjectDetectionPipeline(ImagePipeline):
    """Also accepts the pipeline's `{"image": ..., "candidate_labels": [...]}` dicts."""

    task = "zero-shot-object-detection"
    accepted = frozenset({"candidate_labels", "threshold", "top_k", "timeout"})

    def parse_call(  # type: ignore[override]
        self, image: Any, candidate_labels: Any = None, **kwargs: Any
    ) -> tuple[Any, dict[str, Any]]:
        if candidate_labels is not None:
            kwargs["candidate_labels"] = candidate_labels
        return super().parse_call(image, **kwargs)

    def is_single(self, inputs: Any) -> bool:
        return isinstance(inputs, dict) or is_single_image(inputs)

    def method(self) -> Callable[..., Any]:
        return self.stub().DetectObjectsZeroShot

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.DetectObjectsZeroShotRequest:
        labels = kwargs.get("candidate_labels")
        if isinstance(inputs, dict):
            labels = inputs.get("candidate_labels", labels)
            inputs = inputs["image"]
        labels = [labels] if isinstance(labels, str) else list(labels or [])
        request = vision_pb2.DetectObjectsZeroShotRequest(
            model=self.model, images=[image_input(inputs)], candidate_labels=labels
        )
        if kwargs.get("threshold") is not None:
            request.threshold = float(kwargs["threshold"])
        if kwargs.get("top_k") is not None:
            request.top_k = int(kwargs["top_k"])
        return request

    def read_results(
        self, response: vision_pb2.DetectObjectsZeroShotResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [detected(response.results[0])]


class ImageSegmentationPipeline(ImagePipeline):
    task = "image-segmentation"
    accepted = frozenset({"subtask", "threshold", "mask_threshold", "overlap_mask_area_threshold", "timeout"})

    def method(self) -> Callable[..., Any]:
        return self.stub().SegmentImage

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.SegmentImageRequest:
        subtask = kwargs.get("subtask")
        if subtask not in _SUBTASKS:
            raise ValueError(f"subtask must be 'panoptic', 'instance' or 'semantic', got {subtask!r}")
        request = vision_pb2.SegmentImageRequest(
            model=self.model, images=[image_input(inputs)], subtask=_SUBTASKS[subtask]
        )
        for name in ("threshold", "mask_threshold", "overlap_mask_area_threshold"):
            if kwargs.get(name) is not None:
                setattr(request, name, float(kwargs[name]))
        return request

    def read_results(
        self, response: vision_pb2.SegmentImageResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        return [
            [
                {
                    "score": s.score if s.HasField("score") else None,
                    "label": s.label,
                    "mask": pil_from_png(s.mask_png),
                }
                for s in response.results[0].segments
            ]
        ]


class DepthEstimationPipeline(ImagePipeline):
    task = "depth-estimation"
    accepted = frozenset({"timeout"})

    def method(self) -> Callable[..., Any]:
        return self.stub().EstimateDepth

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.EstimateDepthRequest:
        return vision_pb2.EstimateDepthRequest(model=self.model, images=[image_input(inputs)])

    def read_results(
        self, response: vision_pb2.EstimateDepthResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        depth = response.results[0]
        return [
            {
                "predicted_depth": array_from_float32(depth.predicted_depth),
                "depth": pil_from_png(depth.depth_png),
            }
        ]


class ImageFeatureExtractionPipeline(ImagePipeline):
    """Nested lists of floats like the pipeline; `return_tensors=True` gives a numpy array instead of a tensor."""

    task = "image-feature-extraction"
    accepted = frozenset({"pool", "return_tensors", "timeout", "image_processor_kwargs"})

    def method(self) -> Callable[..., Any]:
        return self.stub().ExtractImageFeatures

    def build_request(self, inputs: Any, kwargs: dict[str, Any]) -> vision_pb2.ExtractImageFeaturesRequest:
        if kwargs.get("image_processor_kwargs"):
            raise TypeError("image_processor_kwargs are not supported over gRPC")
        return vision_pb2.ExtractImageFeaturesRequest(
            model=self.model, images=[image_input(inputs)], pool=bool(kwargs.get("pool"))
        )

    def read_results(
        self, response: vision_pb2.ExtractImageFeaturesResponse, inputs: Any, kwargs: dict[str, Any]
    ) -> list[Any]:
        array = array_from_float32(response.results[0])
        return [array if kwargs.get("return_tensors") else array.tolist()]


PIPELINES: dict[str, type[RemotePipeline]] = {
    cls.task: cls
    for cls in (
        ImageClassificationPipeline,
        ObjectDetectionPipeline,
        ZeroShotImageClassificationPipeline,
        ZeroShotObjectDetectionPipeline,
        ImageSegmentationPipeline,
        DepthEstimationPipeline,
        ImageFeatureExtractionPipeline,
    )
}
