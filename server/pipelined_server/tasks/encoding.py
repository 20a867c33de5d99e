"""Pipeline output values -> wire values: PIL images as PNG, arrays as packed float32."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pipelined.v1 import image_pb2


def png_bytes(image: Any) -> bytes:
    """Lossless: the SDK decodes the same pixels and mode the pipeline returned."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def float32_array(values: Any) -> image_pb2.Float32Array:
    """A tensor, array or nested list as little-endian float32 with its shape."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values, dtype="<f4")
    return image_pb2.Float32Array(data=np.ascontiguousarray(array).tobytes(), shape=list(array.shape))


def class_scores(outputs: list[dict[str, Any]]) -> image_pb2.ClassScores:
    """A list of {"label", "score"} dicts (classification pipelines)."""
    return image_pb2.ClassScores(
        scores=[image_pb2.ClassScore(label=str(o["label"]), score=float(o["score"])) for o in outputs]
    )


LOGIT_FUNCTIONS = {
    image_pb2.LOGIT_FUNCTION_SOFTMAX: "softmax",
    image_pb2.LOGIT_FUNCTION_SIGMOID: "sigmoid",
    image_pb2.LOGIT_FUNCTION_NONE: "none",
}
