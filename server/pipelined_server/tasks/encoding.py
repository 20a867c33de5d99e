"""Pipeline output values -> wire values: PIL images as PNG, arrays as packed float32."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pipelined.v1 import common_pb2


def png_bytes(image: Any) -> bytes:
    """Lossless: the SDK decodes the same pixels and mode the pipeline returned."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def float32_array(values: Any) -> common_pb2.Float32Tensor:
    """A tensor, array or nested list as little-endian float32 with its shape."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().float().numpy()
    array = np.asarray(values, dtype="<f4")
    return common_pb2.Float32Tensor(data=np.ascontiguousarray(array).tobytes(), shape=list(array.shape))


def as_list(output: Any) -> list[Any]:
    """Pipelines return a bare dict instead of a one-element list in some cases (e.g. top_k=1)."""
    return output if isinstance(output, list) else [output]


def class_scores(outputs: list[dict[str, Any]]) -> common_pb2.LabelScores:
    """A list of {"label", "score"} dicts (classification pipelines)."""
    return common_pb2.LabelScores(
        scores=[common_pb2.LabelScore(label=str(o["label"]), score=float(o["score"])) for o in outputs]
    )


LOGIT_FUNCTIONS = {
    common_pb2.SCORE_FUNCTION_SOFTMAX: "softmax",
    common_pb2.SCORE_FUNCTION_SIGMOID: "sigmoid",
    common_pb2.SCORE_FUNCTION_NONE: "none",
}
