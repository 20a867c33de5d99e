"""What users pass as an image -> the ImageInput the wire carries, and PNG bytes back to PIL images.

Accepted like transformers' `load_image`: a local path, an http(s) URL (fetched here: the server never
fetches unless its operator allows the host), a base64 string or data URI, a PIL image, raw encoded
bytes, or a uint8 numpy array (H x W, H x W x 3 or H x W x 4). PIL images and arrays travel as PNG, so
the server sees exactly the same pixels. Pillow is needed only to send PIL images (which implies it is
installed) and to return masks and depth maps as PIL images.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import struct
import urllib.request
import zlib
from typing import Any

import numpy as np

from ..v1 import common_pb2, image_pb2

_PNG_COLOR_TYPES = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type (grey, RGB, RGBA)


def png_from_array(array: Any) -> bytes:
    """A lossless PNG of a uint8 array, without Pillow."""
    pixels = np.asarray(array)
    if pixels.dtype != np.uint8:
        raise ValueError(f"image arrays must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] not in _PNG_COLOR_TYPES:
        raise ValueError(f"image arrays must be H x W, H x W x 3 or H x W x 4, got shape {pixels.shape}")
    height, width, channels = pixels.shape
    rows = np.concatenate([np.zeros((height, 1), np.uint8), pixels.reshape(height, width * channels)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, _PNG_COLOR_TYPES[channels], 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6))
        + chunk(b"IEND", b"")
    )


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save") and hasattr(value, "mode")


def _string_bytes(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(
            source
        ) as response:  # the client fetches; the server never does by default
            return bytes(response.read())
    if source.startswith("data:image/"):
        return base64.b64decode(source.split(",", 1)[1])
    if os.path.isfile(source):
        with open(source, "rb") as handle:
            return handle.read()
    try:
        return base64.b64decode("".join(source.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"incorrect image source: not an http(s) URL, an existing file or a base64 string: {source[:80]!r}"
        ) from None


def image_input(image: Any) -> image_pb2.ImageInput:
    if isinstance(image, image_pb2.ImageInput):
        return image
    if isinstance(image, str | os.PathLike):
        return image_pb2.ImageInput(encoded=_string_bytes(os.fspath(image)))
    if isinstance(image, bytes | bytearray | memoryview):
        return image_pb2.ImageInput(encoded=bytes(image))
    if _is_pil(image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return image_pb2.ImageInput(encoded=buffer.getvalue())
    if hasattr(image, "__array__"):
        return image_pb2.ImageInput(encoded=png_from_array(image))
    raise TypeError(f"unsupported image input of type {type(image).__name__}")


def is_single_image(image: Any) -> bool:
    return (
        isinstance(image, str | os.PathLike | bytes | bytearray | memoryview | image_pb2.ImageInput)
        or _is_pil(image)
        or hasattr(image, "__array__")
    )


def pil_from_png(data: bytes) -> Any:
    try:
        from PIL import Image
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("masks and depth maps are returned as PIL images: pip install pillow") from exc
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def array_from_float32(array: common_pb2.Float32Tensor) -> np.ndarray:
    return np.frombuffer(array.data, dtype="<f4").reshape(tuple(array.shape)).copy()
