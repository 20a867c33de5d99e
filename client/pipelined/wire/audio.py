"""Audio both ways: what users pass to a pipeline -> the AudioInput the wire carries (the same inputs as
transformers accepts), and generated WAV clips -> float32 arrays."""

from __future__ import annotations

import io
import os
import urllib.request
import wave
from typing import Any

import numpy as np

from ..v1 import audio_pb2

# A URL that hangs fails the call instead of hanging it.
URL_TIMEOUT_S = 30.0


def _read_path_or_url(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(
            source, timeout=URL_TIMEOUT_S
        ) as response:  # the client fetches; the server never does
            return bytes(response.read())
    with open(os.fspath(source), "rb") as handle:
        return handle.read()


def _raw_float32(samples: Any, rate: int) -> audio_pb2.AudioInput:
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim == 2:
        # transformers' own layout for multi-channel arrays is (channels, samples); the wire is interleaved.
        channels = array.shape[0]
        data = np.ascontiguousarray(array.T).tobytes()
    elif array.ndim == 1:
        channels = 1
        data = array.tobytes()
    else:
        raise ValueError(f"audio arrays must be 1-D (or channels x samples), got shape {array.shape}")
    fmt = audio_pb2.RawAudioFormat(
        encoding=audio_pb2.AUDIO_ENCODING_FLOAT32, sample_rate_hertz=rate, channel_count=channels
    )
    return audio_pb2.AudioInput(raw=audio_pb2.RawAudio(data=data, format=fmt))


def audio_input(inputs: Any) -> audio_pb2.AudioInput:
    """A file path, URL, encoded bytes, numpy array (at the model's rate), or
    {"raw"|"array": samples, "sampling_rate": hz} dict, as the transformers ASR pipeline accepts."""
    if isinstance(inputs, audio_pb2.AudioInput):
        return inputs
    if isinstance(inputs, str | os.PathLike):
        return audio_pb2.AudioInput(encoded=_read_path_or_url(os.fspath(inputs)))
    if isinstance(inputs, bytes | bytearray | memoryview):
        return audio_pb2.AudioInput(encoded=bytes(inputs))
    if isinstance(inputs, dict):
        if "raw" in inputs:
            samples = inputs["raw"]
        elif "array" in inputs:
            samples = inputs["array"]
        else:
            raise ValueError('an audio dict needs "raw" or "array" samples and "sampling_rate"')
        if "sampling_rate" not in inputs:
            raise ValueError('an audio dict needs "sampling_rate"')
        return _raw_float32(samples, int(inputs["sampling_rate"]))
    if hasattr(inputs, "__array__"):
        # Zero rate: the samples are at the model's own rate, as transformers assumes for bare arrays.
        return _raw_float32(inputs, 0)
    raise TypeError(f"unsupported audio input of type {type(inputs).__name__}")


def is_single_audio(inputs: Any) -> bool:
    """True for one clip; False for a list, tuple, generator or other iterable of clips."""
    return isinstance(
        inputs, str | os.PathLike | bytes | bytearray | memoryview | dict | audio_pb2.AudioInput
    ) or (hasattr(inputs, "__array__"))


def decode_wav(data: bytes, shape: list[int]) -> np.ndarray:
    """PCM16 WAV -> float32 in [-1, 1], in the pipeline's shape (channels first for 2-D)."""
    with wave.open(io.BytesIO(data)) as reader:
        channels = reader.getnchannels()
        frames = np.frombuffer(reader.readframes(reader.getnframes()), dtype="<i2")
    samples = (frames.astype(np.float32) / 32767.0).reshape(-1, channels)
    if len(shape) == 2 and shape[0] == channels and channels != shape[1]:
        samples = samples.T
    return np.ascontiguousarray(samples.reshape(tuple(shape)))
