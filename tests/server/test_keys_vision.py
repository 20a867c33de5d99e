"""The vision adapters' batching rules (tasks/vision.py `any_size`, `same_size`) through the real scheduler and
pipelines: concurrent images that could share a batch are queued together, then each result must equal the
in-process pipeline's unbatched one, and the batch sizes in the metrics must be those the rule claims. Fast
(no server, the tiny models cached on disk): the `vision` mutation group runs this file per mutant."""

from __future__ import annotations

import asyncio
import collections
import functools
from pathlib import Path
from typing import Any

import pytest
from model_cache import cached_model
from pipelined.v1 import vision_pb2
from pipelined_server.tasks import vision
from serving import Run, Serving, assert_protos_close, in_process, png, spec
from tiny_vision_models import build_tiny_image_classifier, build_tiny_object_detector, tiny_image

pytestmark = pytest.mark.timeout(120)

BUILDERS = {
    vision.IMAGE_CLASSIFICATION: build_tiny_image_classifier,
    vision.OBJECT_DETECTION: build_tiny_object_detector,
}
# Two sizes twice each: a fixed-size processor batches all four, a padding one two pairs.
SIZES = [(40, 30), (64, 48), (40, 30), (64, 48)]


@functools.cache
def model_dir(task: str) -> Path:
    return cached_model(BUILDERS[task])


def local(task: str) -> Any:
    return in_process(task, model_dir(task))


def run(task: str, adapter: Any, requests: list[Any]) -> Run:
    async def scenario() -> Run:
        async with Serving([spec(task, task, model_dir(task))]) as serving:
            return await serving.concurrently(task, adapter, requests, items=len(requests))

    return asyncio.run(scenario())


def test_classification_batches_images_of_any_size() -> None:
    """The classifier's processor resizes every image to one size: all four share one batch."""
    images = [tiny_image(seed=90 + i, size=size) for i, size in enumerate(SIZES)]
    task = vision.IMAGE_CLASSIFICATION
    requests = [vision_pb2.ClassifyImageRequest(model=task, images=[png(i)], top_k=3) for i in images]
    result = run(task, vision.IMAGE_CLASSIFICATION_ADAPTER, requests)
    for served, image in zip(result.responses, images, strict=True):
        expected = vision_pb2.ClassifyImageResponse(
            results=[vision.class_scores(local(task)(image, top_k=3))], model=task
        )
        assert_protos_close(served, expected)
    assert result.batches == collections.Counter({4: 1})
    assert result.pipeline_calls == 1


def test_detection_batches_only_images_of_equal_size() -> None:
    """DETR-like processors pad a batch to its largest image, which moves boxes: one batch per size."""
    images = [tiny_image(seed=95 + i, size=size) for i, size in enumerate(SIZES)]
    task = vision.OBJECT_DETECTION
    requests = [vision_pb2.DetectObjectsRequest(model=task, images=[png(i)], threshold=0.3) for i in images]
    result = run(task, vision.OBJECT_DETECTION_ADAPTER, requests)
    for served, image in zip(result.responses, images, strict=True):
        expected = vision_pb2.DetectObjectsResponse(
            results=[vision.detected_objects(local(task)(image, threshold=0.3))], model=task
        )
        assert_protos_close(served, expected)
    assert sum(len(r.results[0].objects) for r in result.responses) > 0, (
        "no boxes to compare at threshold 0.3"
    )
    assert result.batches == collections.Counter({2: 2})
    assert result.pipeline_calls == 2
