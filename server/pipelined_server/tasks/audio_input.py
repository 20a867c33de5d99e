"""AudioInput proto -> mono float32 samples at the model's rate (blocking: callers run it off the event loop)."""

from __future__ import annotations

import numpy as np
from pipelined.v1 import audio_pb2

from ..audio import AudioLimits, RawFormat, decode_encoded, decode_raw
from ..errors import InvalidInput

ENCODINGS = {
    audio_pb2.AUDIO_ENCODING_LINEAR16: "linear16",
    audio_pb2.AUDIO_ENCODING_FLOAT32: "float32",
}


def raw_format(fmt: audio_pb2.RawAudioFormat, model_rate: int) -> RawFormat:
    """Validates a declared PCM format; zero rate means the model's own rate, zero channels means mono."""
    encoding = ENCODINGS.get(fmt.encoding)
    if encoding is None:
        known = fmt.encoding in audio_pb2.AudioEncoding.values()
        name = audio_pb2.AudioEncoding.Name(fmt.encoding) if known else str(fmt.encoding)
        raise InvalidInput(
            f"raw audio encoding {name} is not supported; use AUDIO_ENCODING_LINEAR16 or AUDIO_ENCODING_FLOAT32"
        )
    return RawFormat(
        encoding=encoding,
        sample_rate_hertz=fmt.sample_rate_hertz or model_rate,
        channel_count=fmt.channel_count or 1,
    )


def decode_audio_input(audio: audio_pb2.AudioInput, model_rate: int, limits: AudioLimits) -> np.ndarray:
    """Blocking decode of either source."""
    source = audio.WhichOneof("source")
    if source == "encoded":
        return decode_encoded(audio.encoded, model_rate, limits)
    if source == "raw":
        return decode_raw(audio.raw.data, raw_format(audio.raw.format, model_rate), model_rate, limits)
    raise InvalidInput("audio is missing: set audio.encoded (file bytes) or audio.raw (PCM with its format)")
