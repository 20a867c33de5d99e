"""google.protobuf.Value <-> Python values of any pipeline, with binary parts in a side map of blobs.

The conventions (documented in generic.proto): integral numbers become ints, `{"$float": x}` forces a
float, `{"$tuple": [...]}` is a tuple, and `{"$bytes"|"$image"|"$audio"|"$ndarray": name, ...}` refer
to a blob. Every reference is counted and sized before anything is decoded (`blob_references`,
`decoded_size`), and a blob referenced many times is decoded once (the `cache` of one request). Outputs convert numpy arrays and torch tensors to `$ndarray`, PIL images to `$image` (PNG),
numpy scalars to numbers. A Struct is a map, so key order is lost on the wire; an object whose keys are not
in sorted order carries `"$keys": [...]`, their order (a pandas table's columns, an output dict's keys).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from google.protobuf import struct_pb2

from ..errors import InvalidInput

# Decodes an encoded audio file into what audio pipelines accept; given by the caller (needs the model rate).
AudioDecoder = Callable[[bytes], Any]
_MARKERS = ("$bytes", "$image", "$audio", "$ndarray")
KEYS = "$keys"
# Numeric and boolean arrays only: "S"/"U"/"V" of size 0 divide by zero, "O" would read pointers.
_ARRAY_KINDS = "biufc"


@dataclass(frozen=True)
class BlobRef:
    """One `{"$marker": name, ...}` object: what decoding it produces depends on all three."""

    marker: str
    name: str
    dtype: str = ""
    shape: tuple[int, ...] | None = None


def blob_references(value: struct_pb2.Value | struct_pb2.Struct) -> list[BlobRef]:
    """Every blob reference in a request value, found without decoding anything."""
    refs: list[BlobRef] = []
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, struct_pb2.Value):
            kind = node.WhichOneof("kind")
            if kind == "list_value":
                stack.extend(node.list_value.values)
            elif kind == "struct_value":
                stack.append(node.struct_value)
            continue
        marker = next((m for m in _MARKERS if m in node.fields), None)
        if marker is None:
            stack.extend(node.fields.values())
            continue
        refs.append(_ref(marker, node))
    return refs


def _ref(marker: str, struct: struct_pb2.Struct) -> BlobRef:
    name_value = struct.fields[marker]
    name = name_value.string_value if name_value.WhichOneof("kind") == "string_value" else repr(name_value)
    if marker != "$ndarray":
        return BlobRef(marker, name)
    dtype = struct.fields["dtype"].string_value if "dtype" in struct.fields else "float32"
    shape = None
    if "shape" in struct.fields:
        dims = struct.fields["shape"].list_value.values
        if any(not (math.isfinite(d.number_value) and d.number_value.is_integer()) for d in dims):
            raise InvalidInput(f"blob {name!r}: shape must be a list of integers")
        shape = tuple(int(d.number_value) for d in dims)
    return BlobRef(marker, name, dtype, shape)


def _array_dtype(spec: Any, name: str) -> np.dtype:
    try:
        dtype = np.dtype(str(spec))
    except TypeError as exc:
        raise InvalidInput(f"blob {name!r}: bad ndarray dtype {spec!r}: {exc}") from None
    if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0:
        raise InvalidInput(
            f"blob {name!r}: ndarray dtype {spec!r} is not a numeric or boolean type (bool, int*, uint*, "
            "float*, complex*)"
        )
    return dtype


def _array_shape(raw: bytes, dtype: np.dtype, shape: Any, name: str) -> tuple[int, ...]:
    if shape is None:
        if len(raw) % dtype.itemsize:
            raise InvalidInput(f"blob {name!r}: {len(raw)} bytes is not a whole number of {dtype.name} items")
        return (len(raw) // dtype.itemsize,)
    if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize != len(raw):
        raise InvalidInput(
            f"blob {name!r}: shape {list(shape)} of {dtype.name} does not fit its {len(raw)} bytes"
        )
    return tuple(shape)


def decoded_size(ref: BlobRef, blobs: Mapping[str, bytes], max_pixels: int) -> int:
    """Bytes one reference decodes to, read from headers only; an `$audio` reference counts 0 here (its
    length is known once decoded, within the audio limits, and is counted then)."""
    raw = _blob(blobs, ref.name)
    if ref.marker == "$ndarray":
        _array_shape(raw, _array_dtype(ref.dtype, ref.name), ref.shape, ref.name)
        return len(raw)
    if ref.marker == "$image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(raw)) as image:  # reads the header, decodes nothing
                width, height, bands = image.width, image.height, len(image.getbands())
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"blob {ref.name!r} is not a readable image: {exc}") from None
        if width * height > max_pixels:
            raise InvalidInput(
                f"blob {ref.name!r} is {width}x{height} pixels; the limit is {max_pixels} (images.max_pixels)"
            )
        return width * height * bands
    if ref.marker == "$bytes":
        return len(raw)
    return 0


def _blob(blobs: Mapping[str, bytes], name: Any) -> bytes:
    if not isinstance(name, str) or name not in blobs:
        raise InvalidInput(
            f"blob {name!r} is referenced but not sent; sent blobs: {', '.join(sorted(blobs)) or 'none'}"
        )
    return blobs[name]


def _from_marker(
    data: dict[str, Any], blobs: Mapping[str, bytes], decode_audio: AudioDecoder, cache: dict[Any, Any] | None
) -> Any:
    if "$float" in data:
        return float(data["$float"])
    if "$tuple" in data:
        return tuple(data["$tuple"])
    if cache is None:
        return _decode_blob(data, blobs, decode_audio)
    marker = next(m for m in _MARKERS if m in data)
    shape = data.get("shape")
    key = (marker, repr(data[marker]), str(data.get("dtype", "")), repr(shape))
    if key not in cache:
        cache[key] = _decode_blob(data, blobs, decode_audio)
    return cache[key]


def _decode_blob(data: dict[str, Any], blobs: Mapping[str, bytes], decode_audio: AudioDecoder) -> Any:
    if "$bytes" in data:
        return _blob(blobs, data["$bytes"])
    if "$image" in data:
        from PIL import Image, UnidentifiedImageError

        try:
            image = Image.open(io.BytesIO(_blob(blobs, data["$image"])))
            image.load()
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise InvalidInput(f"blob {data['$image']!r} is not a readable image: {exc}") from None
        return image
    if "$audio" in data:
        return decode_audio(_blob(blobs, data["$audio"]))
    if "$ndarray" in data:
        name = data["$ndarray"]
        raw = _blob(blobs, name)
        dtype = _array_dtype(data.get("dtype", "float32"), name).newbyteorder("<")
        shape = data.get("shape")
        if shape is not None and (not isinstance(shape, list) or not all(isinstance(d, int) for d in shape)):
            raise InvalidInput(f"blob {name!r}: shape must be a list of integers")
        dims = _array_shape(raw, dtype, shape, name)
        return np.frombuffer(raw, dtype=dtype).reshape(dims).astype(dtype.newbyteorder("="))
    return None


def to_python(
    value: struct_pb2.Value,
    blobs: Mapping[str, bytes],
    decode_audio: AudioDecoder,
    cache: dict[Any, Any] | None = None,
) -> Any:
    """The Python value; `cache` (one per request) decodes each referenced blob once."""
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
        return [to_python(v, blobs, decode_audio, cache) for v in value.list_value.values]
    return struct_to_python(value.struct_value, blobs, decode_audio, cache)


def _key_order(struct: struct_pb2.Struct) -> list[str]:
    """The object's keys in the sender's order: `$keys` when sent, else sorted (never the map's order)."""
    keys = sorted(k for k in struct.fields if k != KEYS)
    if KEYS not in struct.fields:
        return keys
    order = struct.fields[KEYS]
    names = [v.string_value for v in order.list_value.values] if order.HasField("list_value") else None
    if names is None or sorted(names) != keys:
        raise InvalidInput(f"{KEYS} must list the object's other keys once each: {names} vs {keys}")
    return names


def struct_to_python(
    struct: struct_pb2.Struct,
    blobs: Mapping[str, bytes],
    decode_audio: AudioDecoder,
    cache: dict[Any, Any] | None = None,
) -> Any:
    data = {k: to_python(struct.fields[k], blobs, decode_audio, cache) for k in _key_order(struct)}
    if any(marker in data for marker in ("$float", "$tuple", *_MARKERS)):
        return _from_marker(data, blobs, decode_audio, cache)
    return data


class OutputEncoder:
    """Python -> Value, collecting binary parts into `blobs`."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def _add(self, data: bytes) -> str:
        name = f"out{len(self.blobs)}"
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
            # An integral float is marked, so the client gives back a float and not an int.
            if math.isfinite(obj) and float(obj).is_integer():
                value.struct_value.update({"$float": float(obj)})
            else:
                value.number_value = float(obj)
        elif isinstance(obj, str):
            value.string_value = obj
        elif isinstance(obj, bytes | bytearray):
            value.struct_value.update({"$bytes": self._add(bytes(obj))})
        elif isinstance(obj, Mapping):
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
        elif isinstance(obj, np.ndarray) or hasattr(obj, "detach"):
            array = obj.detach().cpu().numpy() if hasattr(obj, "detach") else obj
            array = np.ascontiguousarray(array)
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
            # Anything else (rare: custom objects) travels as its repr, marked so the client can tell.
            value.struct_value.update({"$repr": repr(obj)})
        return value
