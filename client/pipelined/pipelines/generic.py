"""`client.pipeline(task)` for tasks without a typed call: GenericService.Run with structured values.

Python values travel as google.protobuf.Value with binary parts in a side map (see generic.proto):
bytes, numpy arrays, PIL images and `Audio(...)` go as blobs; tuples and integral floats are marked so
they come back as the same types. Outputs come back the same way: numpy arrays for arrays and tensors,
PIL images (when Pillow is installed, else PNG bytes). A Struct is a map that loses key order, so dicts
whose keys are not sorted carry `"$keys"`, their order (a table's columns, an output's keys).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from ..v1 import generic_pb2
from .base import DEFAULT_MAX_IN_FLIGHT, RemotePipeline, Stubs

KEYS = "$keys"


@dataclass(frozen=True)
class Audio:
    """An encoded audio file (bytes or a path) that the server decodes at the model's sampling rate."""

    data: bytes | str | os.PathLike[str]

    def read(self) -> bytes:
        if isinstance(self.data, bytes):
            return self.data
        with open(os.fspath(self.data), "rb") as handle:
            return handle.read()


class ValueEncoder:
    """Python -> Value, collecting blobs."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def _add(self, data: bytes) -> str:
        name = f"in{len(self.blobs)}"
        self.blobs[name] = data
        return name

    def encode(self, obj: Any) -> struct_pb2.Value:
        value = struct_pb2.Value()
        if obj is None:
            value.null_value = struct_pb2.NULL_VALUE
        elif isinstance(obj, bool | np.bool_):
            value.bool_value = bool(obj)
        elif isinstance(obj, int | np.integer):
            value.number_value = float(obj)
        elif isinstance(obj, float | np.floating):
            if math.isfinite(obj) and float(obj).is_integer():
                value.struct_value.update({"$float": float(obj)})
            else:
                value.number_value = float(obj)
        elif isinstance(obj, str):
            value.string_value = obj
        elif isinstance(obj, bytes | bytearray):
            value.struct_value.update({"$bytes": self._add(bytes(obj))})
        elif isinstance(obj, Audio):
            value.struct_value.update({"$audio": self._add(obj.read())})
        elif isinstance(obj, dict):
            keys = [str(key) for key in obj]
            value.struct_value.SetInParent()  # an empty dict stays a dict, not null
            for key, item in zip(keys, obj.values(), strict=True):
                value.struct_value.fields[key].CopyFrom(self.encode(item))
            if keys != sorted(keys):
                value.struct_value.fields[KEYS].list_value.values.extend(
                    struct_pb2.Value(string_value=key) for key in keys
                )
        elif isinstance(obj, tuple):
            value.struct_value.fields["$tuple"].CopyFrom(self.encode(list(obj)))
        elif isinstance(obj, list):
            value.list_value.SetInParent()  # an empty list stays a list, not null
            value.list_value.values.extend(self.encode(item) for item in obj)
        elif isinstance(obj, np.ndarray):
            array = np.ascontiguousarray(obj)
            little = array.astype(array.dtype.newbyteorder("<"), copy=False)
            value.struct_value.update(
                {
                    "$ndarray": self._add(little.tobytes()),
                    "dtype": array.dtype.name,
                    "shape": list(array.shape),
                }
            )
        elif hasattr(obj, "save") and hasattr(obj, "mode"):  # a PIL image
            buffer = io.BytesIO()
            obj.save(buffer, format="PNG")
            value.struct_value.update({"$image": self._add(buffer.getvalue())})
        else:
            raise TypeError(f"cannot send a {type(obj).__name__} through the generic call")
        return value


def decode(value: struct_pb2.Value, blobs: dict[str, bytes]) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        number = value.number_value
        return int(number) if math.isfinite(number) and number.is_integer() else number
    if kind == "list_value":
        return [decode(v, blobs) for v in value.list_value.values]
    fields = value.struct_value.fields
    if "$float" in fields:
        return float(fields["$float"].number_value)
    if "$tuple" in fields:
        return tuple(decode(fields["$tuple"], blobs))
    if "$repr" in fields:
        return fields["$repr"].string_value
    if "$bytes" in fields:
        return blobs[fields["$bytes"].string_value]
    if "$ndarray" in fields:
        dtype = np.dtype(fields["dtype"].string_value).newbyteorder("<")
        shape = tuple(int(d.number_value) for d in fields["shape"].list_value.values)
        raw = blobs[fields["$ndarray"].string_value]
        return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
    if "$image" in fields:
        data = blobs[fields["$image"].string_value]
        try:
            from PIL import Image
        except ImportError:
            return data
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    ordered = KEYS in fields
    keys = [v.string_value for v in fields[KEYS].list_value.values] if ordered else sorted(fields)
    return {key: decode(fields[key], blobs) for key in keys}


class GenericPipeline(RemotePipeline):
    """`pipe(inputs, **parameters)` runs `pipeline(task)(inputs, **parameters)` on the server."""

    def __init__(self, client: Stubs, task: str, model: str | None, **defaults: Any) -> None:
        # Every argument is the server pipeline's (none is checked here) except `timeout`: the call's
        # deadline, as on every pipeline.
        self.client = client
        self.task = task
        self.model = model or ""
        self.timeout = defaults.pop("timeout", client.timeout)
        self.defaults = defaults
        self.max_in_flight = DEFAULT_MAX_IN_FLIGHT

    def check_arguments(self, kwargs: dict[str, Any]) -> None:
        """The server's pipeline checks its own arguments."""

    def parse_call(self, inputs: Any = None, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        return inputs, {**self.defaults, **kwargs}

    def is_single(self, inputs: Any) -> bool:
        """Whatever the input, it goes whole to the server's pipeline in one call."""
        return True

    def method(self) -> Any:
        return self.client.generic.Run

    def build_request(self, inputs: Any, parameters: dict[str, Any]) -> generic_pb2.RunRequest:
        encoder = ValueEncoder()
        request = generic_pb2.RunRequest(task=self.task, model=self.model)
        if inputs is not None:
            request.inputs.CopyFrom(encoder.encode(inputs))
        params = encoder.encode(parameters)
        request.parameters.CopyFrom(params.struct_value)
        for name, data in encoder.blobs.items():
            request.blobs[name] = data
        return request

    def read_results(self, response: generic_pb2.RunResponse, unit: Any, kwargs: dict[str, Any]) -> list[Any]:
        return [decode(response.outputs, dict(response.blobs))]
