"""Bad images and refused URLs get INVALID_ARGUMENT / PERMISSION_DENIED with a clear message, the server
keeps serving, and real images from the shared data folder decode and run through the vision tasks."""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import grpc  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

import tiny_vision_models as tiny  # noqa: E402
from harness import ServerThread  # noqa: E402
from pipelined import Client, InvalidArgument, PipelinedError  # noqa: E402
from pipelined.v1 import image_pb2, vision_pb2  # noqa: E402
from pipelined_server.config import InputLimits, ModelSpec, ServerConfig, parse_config  # noqa: E402
from pipelined_server.errors import ConfigError  # noqa: E402
from pipelined_server.images import ImageLimits  # noqa: E402

SHARED_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "images"
TASKS = {
    "image-classification": tiny.build_tiny_image_classifier,
    "object-detection": tiny.build_tiny_object_detector,
    "image-segmentation": tiny.build_tiny_semantic_segmenter,
    "depth-estimation": tiny.build_tiny_depth_estimator,
}


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge canvas (a decompression bomb's signature)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    specs = tuple(
        ModelSpec(name=t, task=t, source=str(b(tmp_path_factory.mktemp(t)))) for t, b in TASKS.items()
    )
    limits = ImageLimits(max_pixels=1_000_000, allowed_url_hosts=("127.0.0.1",))
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        metrics_port=0,
        images=limits,
        limits=InputLimits(max_inputs_per_request=3),
        models=specs,
    )
    thread = ServerThread(config)
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Client:
    return Client(server.target, timeout=60)


def classify(client: Client, *images: image_pb2.ImageInput) -> Any:
    request = vision_pb2.ClassifyImageRequest(model="image-classification", images=list(images))
    return client.vision.ClassifyImage(request, timeout=60)


def code_and_message(client: Client, *images: image_pb2.ImageInput) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        classify(client, *images)
    return info.value.code(), info.value.details()


def test_decompression_bomb_is_refused_from_its_header(client: Client) -> None:
    code, message = code_and_message(client, image_pb2.ImageInput(encoded=png_declaring(50000, 50000)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "pixels" in message
    # Above our limit but below Pillow's own: our message, with the size.
    code, message = code_and_message(client, image_pb2.ImageInput(encoded=png_declaring(2000, 1000)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "2000x1000" in message and "1000000" in message


@pytest.mark.parametrize(
    ("data", "needle"),
    [(b"", "empty"), (b"this is not an image", "not an image"), (png_declaring(10, 10)[:40], "")],
)
def test_non_images_are_invalid_argument(client: Client, data: bytes, needle: str) -> None:
    code, message = code_and_message(client, image_pb2.ImageInput(encoded=data))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in message


def test_missing_image_and_too_many_images(client: Client) -> None:
    code, message = code_and_message(client, image_pb2.ImageInput())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing" in message
    buffer = io.BytesIO()
    tiny.tiny_image(0).save(buffer, format="PNG")
    image = image_pb2.ImageInput(encoded=buffer.getvalue())
    code, message = code_and_message(client, *[image] * 4)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_inputs_per_request" in message
    with pytest.raises(grpc.RpcError) as info:
        client.vision.ClassifyImage(vision_pb2.ClassifyImageRequest(model="image-classification"), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_urls_are_refused_unless_the_host_is_allowed(client: Client) -> None:
    code, message = code_and_message(client, image_pb2.ImageInput(url="http://example.com/cat.png"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "example.com" in message and "allowed_url_hosts" in message
    code, _ = code_and_message(client, image_pb2.ImageInput(url="file:///etc/passwd"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_allowed_url_is_fetched_by_the_server(client: Client, tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    tiny.tiny_image(3).save(tmp_path / "x.png")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/x.png"
        by_url = classify(client, image_pb2.ImageInput(url=url))
        by_bytes = classify(client, image_pb2.ImageInput(encoded=(tmp_path / "x.png").read_bytes()))
        assert by_url.results == by_bytes.results
    finally:
        httpd.shutdown()


def test_sdk_raises_typed_errors_and_server_keeps_serving(client: Client) -> None:
    pipe = client.pipeline("image-classification", model="image-classification")
    with pytest.raises(InvalidArgument):
        pipe(png_declaring(50000, 50000))
    with pytest.raises(InvalidArgument):
        pipe(b"not an image")
    with pytest.raises(PipelinedError):
        pipe(tiny.tiny_image(0), top_k=0)
    assert len(pipe(tiny.tiny_image(0))) == 5


def test_image_limits_config() -> None:
    base = {"models": [{"name": "a", "task": "image-classification", "source": "x"}]}
    config = parse_config({**base, "images": {"max_pixels": 10, "allowed_url_hosts": ["Example.com"]}})
    assert config.images.max_pixels == 10 and config.images.allowed_url_hosts == ("example.com",)
    with pytest.raises(ConfigError, match="images"):
        parse_config({**base, "images": {"max_pixel": 10}})
    with pytest.raises(ConfigError, match=r"images\.max_pixels: Input should be greater than 0"):
        parse_config({**base, "images": {"max_pixels": 0}})


@pytest.mark.parametrize(
    "name", ["coco_cats.png", "skimage_chelsea.png", "skimage_coffee.png", "skimage_rocket.jpg"]
)
def test_shared_images_run_through_vision_tasks(client: Client, name: str) -> None:
    path = SHARED_IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data folder is not next to this checkout")
    from PIL import Image

    size = Image.open(path).size
    assert len(client.pipeline("image-classification", model="image-classification")(str(path))) == 5
    assert isinstance(
        client.pipeline("object-detection", model="object-detection")(str(path), threshold=0.0), list
    )
    masks = client.pipeline("image-segmentation", model="image-segmentation")(str(path))
    assert masks and all(m["mask"].size == size for m in masks)
    depth = client.pipeline("depth-estimation", model="depth-estimation")(str(path))
    assert depth["depth"].size == size
