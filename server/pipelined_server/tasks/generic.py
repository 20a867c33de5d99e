"""The generic call: any pipeline task, inputs and parameters as structured values (see generic_values.py).

Batching rule: never. Only the typed adapters know when padding changes a task's results, so a
generic call runs alone on the model's worker thread, with its inputs passed to the pipeline as is (a
list stays a list: the pipeline batches within the call, as it would in-process).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pipelined.v1 import generic_pb2

from ..config import ServerConfig
from ..errors import InvalidInput, PermissionDenied
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_count, check_text
from .generic_values import OutputEncoder, struct_to_python, to_python


def _check_sizes(value: Any, config: ServerConfig, where: str = "inputs") -> None:
    if isinstance(value, str):
        check_text(value, config.limits, where)
    elif isinstance(value, list):
        if where == "inputs":
            check_count(len(value), "inputs", config.limits)
        for i, item in enumerate(value):
            _check_sizes(item, config, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_sizes(item, config, f"{where}.{key}")


# Tasks whose pipelines read a string input as a file path on the server or a URL to fetch.
_MEDIA_TASKS = frozenset(
    {
        "automatic-speech-recognition",
        "audio-classification",
        "zero-shot-audio-classification",
        "image-classification",
        "image-feature-extraction",
        "image-segmentation",
        "image-text-to-text",
        "depth-estimation",
        "document-question-answering",
        "object-detection",
        "zero-shot-image-classification",
        "zero-shot-object-detection",
        "mask-generation",
        "keypoint-matching",
        "video-classification",
        "any-to-any",
    }
)


def _refuse_server_side_sources(value: Any, config: ServerConfig) -> None:
    """A media pipeline would open a string as a server file or fetch it as a URL: a client must not make
    the server read its files or reach other hosts. URLs pass only for `images.allowed_url_hosts`."""
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme in {"http", "https"}:
            if (parts.hostname or "").lower() not in config.images.allowed_url_hosts:
                raise PermissionDenied(
                    f"the server does not fetch {parts.hostname!r}: send the content as a binary part "
                    "($image/$audio/$bytes) or list the host in images.allowed_url_hosts"
                )
        elif parts.scheme in {"file", "ftp"} or (len(value) < 4096 and os.path.exists(value)):
            raise InvalidInput(
                "the generic call does not read files on the server: send the content as a binary part "
                "($image/$audio/$bytes)"
            )
    elif isinstance(value, list):
        for item in value:
            _refuse_server_side_sources(item, config)
    elif isinstance(value, dict):
        for item in value.values():
            _refuse_server_side_sources(item, config)


def _audio_decoder(instance: ModelInstance, config: ServerConfig) -> Any:
    def decode(data: bytes) -> dict[str, Any]:
        from ..audio import decode_encoded

        rate = instance.sampling_rate or 16000
        samples: np.ndarray = decode_encoded(data, rate, config.audio)
        return {"raw": samples, "sampling_rate": rate}

    return decode


def _run(pipe: Any, inputs: Any, parameters: dict[str, Any]) -> Any:
    return pipe(inputs, **parameters) if inputs is not None else pipe(**parameters)


class Generic(Adapter[generic_pb2.RunRequest, generic_pb2.RunResponse]):
    """Any task by name; the work is one call of the pipeline, as in-process."""

    task = "generic"
    # Outputs (images, arrays) are encoded into blobs: blocking work.
    encodes = True

    def task_of(self, request: generic_pb2.RunRequest) -> str:
        if not request.task:
            raise InvalidInput("task is required, e.g. 'table-question-answering'")
        return request.task

    def items(
        self,
        request: generic_pb2.RunRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        blobs = dict(request.blobs)
        decode = _audio_decoder(instance, config)
        inputs = to_python(request.inputs, blobs, decode) if request.HasField("inputs") else None
        parameters = (
            struct_to_python(request.parameters, blobs, decode) if request.HasField("parameters") else {}
        )
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object of keyword arguments")
        _check_sizes(inputs, config)
        _check_sizes(parameters, config, "parameters")
        if instance.spec.task in _MEDIA_TASKS:
            _refuse_server_side_sources(inputs, config)
            _refuse_server_side_sources(parameters, config)
        return [Item(call=lambda pipe: _run(pipe, inputs, parameters))]

    def response(
        self,
        request: generic_pb2.RunRequest,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> generic_pb2.RunResponse:
        encoder = OutputEncoder()
        encoded = encoder.encode(outputs[0])
        return generic_pb2.RunResponse(outputs=encoded, blobs=encoder.blobs, model=instance.name)


ADAPTER = Generic()
