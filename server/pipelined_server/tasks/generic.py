"""The generic call: any pipeline task, inputs and parameters as structured values (see generic_values.py).

Batching rule: never. Only the typed adapters know when padding changes a task's results, so a
generic call runs alone on the model's worker thread, with its inputs passed to the pipeline as is (a
list stays a list: the pipeline batches within the call, as it would in-process).

Bounds, in the order they apply (issue 10 measured each one missing): parameter names against the task's
allow-list (generic_parameters.py) and queue room, before anything is decoded; every blob reference
counted and sized from headers, in inputs and parameters alike, against `limits.max_blob_references` and
`limits.max_decoded_bytes_per_request` (each reference counts: the pipeline converts every input); the
server-wide `limits.max_decoded_bytes_in_flight` reserved (held until the call answers: budget.holding);
then each blob decoded once, off the event loop.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from pipelined.v1 import generic_pb2

from ..budget import ByteBudget, Reservation, current_reservation
from ..config import ServerConfig
from ..errors import InvalidInput, PermissionDenied
from ..registry import ModelInstance
from .adapter import Adapter, Item
from .checks import check_count, check_text
from .generic_parameters import check_parameter_names, check_parameters
from .generic_values import (
    KEYS,
    BlobRef,
    OutputEncoder,
    blob_references,
    decoded_size,
    struct_to_python,
    to_python,
)


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


class _Decoding:
    """One request's blobs, decoded once each, every reference charged to the request's budget."""

    def __init__(
        self,
        instance: ModelInstance,
        request: generic_pb2.RunRequest,
        config: ServerConfig,
        reservation: Reservation,
    ) -> None:
        self.instance, self.request, self.config = instance, request, config
        self.reservation = reservation
        self.blobs = dict(request.blobs)
        self.charged = 0
        self.audio_refs: Counter[str] = Counter()

    def _charge(self, nbytes: int, what: str) -> None:
        limit = self.config.limits.max_decoded_bytes_per_request
        if self.charged + nbytes > limit:
            raise InvalidInput(
                f"the request's blob references decode to more than {limit} bytes ({what}); send fewer or "
                "smaller blobs (limits.max_decoded_bytes_per_request)"
            )
        self.reservation.take(nbytes)  # the server-wide budget: RESOURCE_EXHAUSTED when over
        self.charged += nbytes

    def plan(self) -> None:
        """Counts and sizes every reference before anything is decoded."""
        refs: list[BlobRef] = []
        if self.request.HasField("inputs"):
            refs += blob_references(self.request.inputs)
        if self.request.HasField("parameters"):
            refs += blob_references(self.request.parameters)
        limits = self.config.limits
        if len(refs) > limits.max_blob_references:
            raise InvalidInput(
                f"the request references blobs {len(refs)} times (inputs and parameters); this server "
                f"allows at most {limits.max_blob_references} (limits.max_blob_references)"
            )
        self.audio_refs = Counter(ref.name for ref in refs if ref.marker == "$audio")
        sizes: dict[BlobRef, int] = {}
        for ref in refs:
            if ref not in sizes:
                sizes[ref] = decoded_size(ref, self.blobs, self.config.images.max_pixels)
        self._charge(sum(sizes[ref] for ref in refs), f"{len(refs)} references")

    def decode_audio(self, data: bytes) -> dict[str, Any]:
        from ..audio import decode_encoded

        rate = self.instance.sampling_rate or 16000
        samples: np.ndarray = decode_encoded(data, rate, self.config.audio)
        # An audio file's decoded length is known once decoded (bounded by the audio limits): charged now,
        # once per reference to the same bytes.
        refs = max((n for name, n in self.audio_refs.items() if self.blobs.get(name) == data), default=1)
        self._charge(samples.nbytes * refs, "decoded audio")
        return {"raw": samples, "sampling_rate": rate}

    def values(self) -> tuple[Any, dict[str, Any]]:
        self.plan()
        cache: dict[Any, Any] = {}
        request, blobs, decode = self.request, self.blobs, self.decode_audio
        inputs = to_python(request.inputs, blobs, decode, cache) if request.HasField("inputs") else None
        parameters = (
            struct_to_python(request.parameters, blobs, decode, cache)
            if request.HasField("parameters")
            else {}
        )
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be an object of keyword arguments")
        return inputs, parameters


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

    def arguments(
        self, request: generic_pb2.RunRequest, instance: ModelInstance, config: ServerConfig
    ) -> dict[str, Any]:
        # Names only, before anything is decoded (values are checked once decoded, in items).
        check_parameter_names([k for k in request.parameters.fields if k != KEYS], instance.spec.task)
        return {}

    def items(
        self,
        request: generic_pb2.RunRequest,
        instance: ModelInstance,
        config: ServerConfig,
        kwargs: dict[str, Any],
    ) -> list[Item]:
        reservation = current_reservation()
        if reservation is None:  # outside the unary path's `holding`: a budget of this call alone
            limit = config.limits.max_decoded_bytes_per_request
            reservation = Reservation(ByteBudget(limit, "request payloads"))
        inputs, parameters = _Decoding(instance, request, config, reservation).values()
        check_parameters(parameters, instance.spec.task, config.limits)
        _check_sizes(inputs, config)
        _check_sizes(parameters, config, "parameters")
        if instance.spec.task in _MEDIA_TASKS:
            _refuse_server_side_sources(inputs, config)
            _refuse_server_side_sources(parameters, config)
        # A partial, not a closure: a model process (batching/model_process.py) receives the call pickled.
        return [Item(call=partial(_run, inputs=inputs, parameters=parameters))]

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
