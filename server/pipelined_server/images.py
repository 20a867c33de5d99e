"""Image bytes -> PIL images, within the server's limits; URLs only from allowed hosts.

A decompression bomb (a small file declaring a huge canvas) is refused from its header: Pillow reads the
size without decoding pixels, so the check happens before any large allocation.
"""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import warnings
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from .errors import InvalidInput, PermissionDenied
from .sections import Float, Int, Section


class ImageLimits(Section):
    """Bounds on one image; how many inputs a request may carry is `limits.max_inputs_per_request`."""

    # Largest width x height accepted; checked from the header before the pixels are decoded.
    max_pixels: Int = Field(default=40_000_000, gt=0)
    # Hosts whose http(s) URLs the server fetches itself; empty (the default) refuses every URL.
    allowed_url_hosts: tuple[str, ...] = ()
    # Give up on a URL after this many seconds.
    url_timeout_s: Float = Field(default=10.0, gt=0)
    # Largest image fetched from a URL, in bytes.
    max_url_bytes: Int = Field(default=32 * 1024 * 1024, gt=0)

    @field_validator("allowed_url_hosts", mode="after")
    @classmethod
    def _lower_case(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        """Host names compare case-insensitively; URLs are matched lower-cased."""
        return tuple(h.lower() for h in hosts)


def decode_image(data: bytes, limits: ImageLimits) -> Any:
    """Blocking: the decoded PIL image, or InvalidInput naming what is wrong."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise InvalidInput("the image is empty: set ImageInput.encoded to the bytes of an image file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"the image has too many pixels (limit {limits.max_pixels}): {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(
            f"the bytes are not an image Pillow can read ({type(exc).__name__}: {exc})"
        ) from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise InvalidInput(
            f"the image is {width}x{height} = {width * height} pixels; this server accepts at most "
            f"{limits.max_pixels} pixels per image"
        )
    try:
        image.load()
    except Exception as exc:  # truncated or corrupt pixel data: Pillow raises OSError, SyntaxError, ...
        raise InvalidInput(f"the image data is corrupt or truncated ({type(exc).__name__}: {exc})") from None
    return image


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect could lead to a host outside the allow-list, so none is followed."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def fetch_url(url: str, limits: ImageLimits) -> bytes:
    """Blocking: the bytes behind an allowed http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"image URL {url!r} is not an http(s) URL")
    host = parts.hostname.lower()
    if host not in limits.allowed_url_hosts:
        raise PermissionDenied(
            f"this server does not fetch images from {host!r}; send the image bytes in ImageInput.encoded "
            "(the SDK fetches URLs itself) or add the host to images.allowed_url_hosts in the server config"
        )
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=limits.url_timeout_s) as response:
            data = response.read(limits.max_url_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise InvalidInput(f"cannot fetch image URL {url!r}: {exc}") from None
    if len(data) > limits.max_url_bytes:
        raise InvalidInput(f"image at {url!r} is larger than images.max_url_bytes ({limits.max_url_bytes})")
    return bytes(data)
