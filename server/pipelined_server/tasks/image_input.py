"""ImageInput protos -> PIL images (blocking: adapters decode in `items`, off the event loop)."""

from __future__ import annotations

from typing import Any

from pipelined.v1 import image_pb2

from ..errors import InvalidInput
from ..images import ImageLimits, decode_image, fetch_url


def load_image_input(image: image_pb2.ImageInput, limits: ImageLimits) -> Any:
    """Blocking decode of either source."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return decode_image(image.encoded, limits)
    if source == "url":
        return decode_image(fetch_url(image.url, limits), limits)
    raise InvalidInput("the image is missing: set ImageInput.encoded (image file bytes) or ImageInput.url")
