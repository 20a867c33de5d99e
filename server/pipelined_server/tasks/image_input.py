"""ImageInput protos -> PIL images (decoding and any allowed URL fetch run off the event loop)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pipelined.v1 import image_pb2

from ..config import InputLimits
from ..errors import InvalidInput
from ..images import ImageLimits, decode_image, fetch_url


def check_count(count: int, what: str, limits: InputLimits) -> None:
    """A request must carry at least one input and at most `max_inputs_per_request`."""
    if count == 0:
        raise InvalidInput(f"the request has no {what}")
    if count > limits.max_inputs_per_request:
        raise InvalidInput(
            f"the request has {count} {what}; this server accepts at most {limits.max_inputs_per_request} "
            "per request (limits.max_inputs_per_request): split it into several requests"
        )


def load_image_input(image: image_pb2.ImageInput, limits: ImageLimits) -> Any:
    """Blocking decode of either source."""
    source = image.WhichOneof("source")
    if source == "encoded":
        return decode_image(image.encoded, limits)
    if source == "url":
        return decode_image(fetch_url(image.url, limits), limits)
    raise InvalidInput("the image is missing: set ImageInput.encoded (image file bytes) or ImageInput.url")


async def load_image_input_async(image: image_pb2.ImageInput, limits: ImageLimits) -> Any:
    return await asyncio.to_thread(load_image_input, image, limits)


async def load_images(
    images: Sequence[image_pb2.ImageInput], limits: ImageLimits, inputs: InputLimits
) -> list[Any]:
    """All images of a request, in order; the first bad one fails the request."""
    check_count(len(images), "images", inputs)
    return await asyncio.to_thread(lambda: [load_image_input(i, limits) for i in images])
