"""Audio in and out for the server: decode, validate, downmix to mono and resample to the model's rate.

Every problem with the caller's audio raises `InvalidInput` with a message that names what was wrong and
what is allowed; programming errors (a bad target rate from our own config) raise `ValueError`.
Decoding is blocking CPU work: callers run it off the event loop.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Final

import av
import numpy as np
import soundfile as sf
import soxr
from pydantic import Field, model_validator

from pipelined_server.errors import InvalidInput
from pipelined_server.sections import Float, Int, Section, invalid

__all__ = [
    "RAW_ENCODINGS",
    "AudioLimits",
    "RawFormat",
    "StreamResampler",
    "decode_encoded",
    "decode_raw",
    "encode_wav",
    "resample",
]

# "HQ" is soxr's default and transparent for speech models; "VHQ" costs more CPU for no audible gain.
_QUALITY: Final = "HQ"
# Large enough that per-call overhead vanishes, small enough that an 8-channel 192 kHz block stays ~2 MB.
_BLOCK_FRAMES: Final = 65536
# Only the little-endian wire encodings the API documents; a big-endian or 24-bit variant would need a
# new name here rather than a silent reinterpretation.
RAW_ENCODINGS: Final[dict[str, np.dtype]] = {
    "linear16": np.dtype("<i2"),
    "float32": np.dtype("<f4"),
}
_RAW_ENCODINGS_HELP: Final = (
    "'linear16' (16-bit signed little-endian PCM) or 'float32' (32-bit float little-endian PCM)"
)
# Nested opens (concat scripts, playlists, SDP) would let a payload make FFmpeg read local files or
# reach the network; our input is custom I/O, which needs no protocol, so allow none.
_PYAV_CONTAINER_OPTIONS: Final = {"protocol_whitelist": "none"}
_SOUNDFILE_FORMATS: Final = "WAV, FLAC, AIFF, OGG Vorbis/Opus, MP3, CAF, W64, ..."
_PYAV_FORMATS: Final = "any FFmpeg demuxer and decoder: MP4/M4A AAC, WebM/Matroska, Opus, WMA, AC-3, ..."


class AudioLimits(Section):
    """Bounds on what one request may send; the defaults suit hours-long speech at studio rates."""

    max_payload_bytes: Int = Field(default=64 * 1024 * 1024, gt=0)
    max_duration_s: Float = Field(default=3 * 60 * 60, gt=0)
    min_sample_rate_hertz: Int = Field(default=4000, gt=0)
    max_sample_rate_hertz: Int = Field(default=192_000, gt=0)
    max_channels: Int = Field(default=8, gt=0)

    @model_validator(mode="after")
    def _admits_some_rate(self) -> AudioLimits:
        """Reject a rate range that could never admit any audio, so a bad config fails at start-up."""
        if self.min_sample_rate_hertz > self.max_sample_rate_hertz:
            raise invalid(
                "min_sample_rate_hertz",
                f"{self.min_sample_rate_hertz} is above max_sample_rate_hertz ({self.max_sample_rate_hertz})",
            )
        return self


DEFAULT_LIMITS: Final = AudioLimits()


@dataclass(frozen=True)
class RawFormat:
    """How headerless PCM bytes are laid out: encoding (see `RAW_ENCODINGS`), rate and interleaved channels."""

    encoding: str
    sample_rate_hertz: int
    channel_count: int = 1


class _NotDecoded(Exception):
    """One decoder could not read the bytes; the next one gets a try."""


class _DecodedEmpty(_NotDecoded):
    """libsndfile read the file but found no samples; if FFmpeg cannot do better, the file is empty."""


# ---------------------------------------------------------------------------------------------------------
# Public API


def decode_encoded(data: bytes, target_rate: int, limits: AudioLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode an encoded audio file's bytes to mono float32 at `target_rate`.

    libsndfile goes first because it is fast and sample-exact for the common formats; FFmpeg (PyAV)
    catches everything else. Both read from memory only.
    """
    _check_target_rate(target_rate)
    _check_payload(data, limits)
    try:
        return _decode_with_soundfile(data, target_rate, limits)
    except _NotDecoded as exc:
        soundfile_reason = str(exc)
        soundfile_empty = isinstance(exc, _DecodedEmpty)
    try:
        return _decode_with_pyav(data, target_rate, limits)
    except _NotDecoded as exc:
        if soundfile_empty:
            raise InvalidInput(f"{soundfile_reason}; send at least one sample of audio") from exc
        pyav_reason = str(exc)
    raise InvalidInput(
        f"could not decode the audio payload ({len(data)} bytes, starting 0x{data[:8].hex()}) in any "
        f"supported format: libsndfile {sf.__libsndfile_version__} ({_SOUNDFILE_FORMATS}) said "
        f"{soundfile_reason!r}; FFmpeg {av.ffmpeg_version_info} ({_PYAV_FORMATS}) said {pyav_reason!r}. "
        "Send a complete encoded audio file, or raw PCM with its encoding, sample rate and channel count"
    )


def decode_raw(
    data: bytes, fmt: RawFormat, target_rate: int, limits: AudioLimits = DEFAULT_LIMITS
) -> np.ndarray:
    """Convert headerless interleaved PCM to mono float32 at `target_rate`."""
    _check_target_rate(target_rate)
    dtype = _check_raw_format(fmt, limits)
    _check_payload(data, limits)
    frame_bytes = dtype.itemsize * fmt.channel_count
    if len(data) % frame_bytes:
        raise InvalidInput(_partial_frame_message(fmt, dtype, len(data), "the payload is"))
    # Checked before any conversion so an over-long upload costs no more than its length check.
    _check_duration(len(data) // frame_bytes / fmt.sample_rate_hertz, limits, "the raw audio is")
    mono = _pcm_to_mono(data, dtype, fmt.channel_count)
    return resample(mono, fmt.sample_rate_hertz, target_rate)


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 audio (1-D mono or 2-D frames x channels) with soxr at high quality."""
    _check_target_rate(from_rate)
    _check_target_rate(to_rate)
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if from_rate == to_rate or x.shape[0] == 0:
        return x
    return soxr.resample(x, from_rate, to_rate, quality=_QUALITY)


class StreamResampler:
    """Turns live raw PCM chunks of any size into mono float32 at the target rate, incrementally.

    Chunks need not align with frames: bytes of a split frame wait for the next `push`. The output of all
    `push` calls plus `flush` equals a one-shot `decode_raw` of the concatenated bytes.
    """

    def __init__(self, fmt: RawFormat, target_rate: int, limits: AudioLimits = DEFAULT_LIMITS) -> None:
        """Validate the stream's declared format once, up front, so every chunk is cheap."""
        _check_target_rate(target_rate)
        self._dtype = _check_raw_format(fmt, limits)
        self._fmt = fmt
        self._frame_bytes = self._dtype.itemsize * fmt.channel_count
        self._pending = b""
        self._finished = False
        # Equal rates pass through untouched: soxr would only add latency and a filter's ripple.
        self._stream = (
            None
            if fmt.sample_rate_hertz == target_rate
            else soxr.ResampleStream(fmt.sample_rate_hertz, target_rate, 1, dtype="float32", quality=_QUALITY)
        )

    def push(self, data: bytes) -> np.ndarray:
        """Convert one chunk; returns the samples ready so far (possibly none, as the filter has delay)."""
        if self._finished:
            raise RuntimeError("StreamResampler.push() after flush()")
        buffer = self._pending + bytes(data)
        usable = len(buffer) - len(buffer) % self._frame_bytes
        # Converted before `_pending` moves on, so a rejected chunk (non-finite floats) leaves no trace.
        mono = _pcm_to_mono(buffer[:usable], self._dtype, self._fmt.channel_count)
        self._pending = buffer[usable:]
        if self._stream is None:
            return mono
        return self._stream.resample_chunk(mono, last=False)

    def flush(self) -> np.ndarray:
        """End the stream: returns the resampler's tail. A trailing partial frame is an error."""
        if self._finished:
            raise RuntimeError("StreamResampler.flush() called twice")
        self._finished = True
        if self._pending:
            raise InvalidInput(
                _partial_frame_message(self._fmt, self._dtype, len(self._pending), "the stream ended with")
            )
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """Encode model output audio as a 16-bit PCM WAV file.

    1-D arrays are mono; 2-D arrays may be channels-first (as transformers' text-to-audio pipelines return
    them) or frames-first: audio has far fewer channels than frames, so the shorter axis is channels.
    """
    _check_target_rate(rate)
    x = np.asarray(samples)
    if x.ndim == 2 and x.shape[0] < x.shape[1]:
        x = x.T
    if x.ndim not in (1, 2):
        raise ValueError(f"encode_wav expects 1-D or 2-D samples, got shape {x.shape}")
    if x.dtype != np.int16:
        # A model's stray NaN or overshoot must not wrap around to full-scale clicks in 16-bit PCM.
        x = np.nan_to_num(x.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
        x = np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)
    buffer = io.BytesIO()
    sf.write(buffer, x, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------------
# Decoders


def _decode_with_soundfile(data: bytes, target_rate: int, limits: AudioLimits) -> np.ndarray:
    """libsndfile path; raises _NotDecoded for anything it cannot read, InvalidInput for limit breaches."""
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except (sf.SoundFileError, RuntimeError, TypeError, ValueError) as exc:
        raise _NotDecoded(_reason(exc)) from exc
    with handle:
        what = f"the {handle.format} file"
        _check_rate_and_channels(handle.samplerate, handle.channels, limits, what)
        _check_duration(handle.frames / handle.samplerate, limits, f"{what} declares")
        sink = _MonoSink(target_rate, limits, what)
        try:
            for block in handle.blocks(blocksize=_BLOCK_FRAMES, dtype="float32", always_2d=True):
                sink.feed(block, handle.samplerate)
        except (sf.SoundFileError, RuntimeError) as exc:
            raise _NotDecoded(f"{handle.format} read failed: {_reason(exc)}") from exc
        samples = sink.finish()
    if samples.size == 0:
        # A header-only file, or one libsndfile misreads: FFmpeg gets a say before we call it empty.
        raise _DecodedEmpty(f"{what} decoded to zero samples")
    return samples


def _decode_with_pyav(data: bytes, target_rate: int, limits: AudioLimits) -> np.ndarray:
    """FFmpeg path for what libsndfile cannot read (AAC, WebM, WMA, ...)."""
    try:
        container = av.open(
            io.BytesIO(data), mode="r", container_options=_PYAV_CONTAINER_OPTIONS, metadata_errors="ignore"
        )
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise _NotDecoded(_reason(exc)) from exc
    with container:
        what = f"the {container.format.name} file"
        if not container.streams.audio:
            kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
            raise InvalidInput(f"{what} holds no audio stream (found: {kinds}); send a file with audio")
        stream = container.streams.audio[0]
        context = stream.codec_context
        # The header's rate and channels can be 0 (unknown until decoding); frames are checked below.
        if context.sample_rate and context.channels:
            _check_rate_and_channels(context.sample_rate, context.channels, limits, what)
        declared = _declared_seconds(container, stream)
        if declared is not None:
            _check_duration(declared, limits, f"{what} declares")
        sink = _MonoSink(target_rate, limits, what)
        _pump_pyav(container, stream, sink, limits, what)
        samples = sink.finish()
    if samples.size == 0:
        raise InvalidInput(f"{what} decoded to zero samples; send at least one sample of audio")
    return samples


def _pump_pyav(
    container: av.container.InputContainer,
    stream: av.audio.stream.AudioStream,
    sink: _MonoSink,
    limits: AudioLimits,
    what: str,
) -> None:
    """Decode every packet into the sink, skipping corrupt packets the way the ffmpeg CLI does."""
    errors: list[str] = []
    try:
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.FFmpegError as exc:
                errors.append(_reason(exc))
                continue
            for frame in frames:
                _check_rate_and_channels(frame.sample_rate, frame.layout.nb_channels, limits, what)
                sink.feed(_frame_to_array(frame), frame.sample_rate)
    except av.FFmpegError as exc:
        # A truncated or damaged tail: keep what decoded, as players do, unless nothing did.
        errors.append(_reason(exc))
    if errors and sink.empty:
        raise _NotDecoded(f"{what}: {len(errors)} packet(s) failed to decode, first: {errors[0]}")


def _declared_seconds(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream
) -> float | None:
    """The duration the header claims, if any: lets an over-long upload fail before it is decoded."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _reason(exc: Exception) -> str:
    """A decoder's complaint without object reprs or errno noise, fit for the caller's eyes."""
    strerror = getattr(exc, "strerror", None)
    text = strerror if isinstance(strerror, str) and strerror else str(exc)
    # libsndfile's messages start "Error opening <_io.BytesIO object at 0x...>: ".
    return re.sub(r"^Error opening <[^>]*>: ", "", text).strip()


def _frame_to_array(frame: av.AudioFrame) -> np.ndarray:
    """An FFmpeg audio frame as float32 frames x channels, whatever its sample format."""
    array = frame.to_ndarray()
    # Planar formats come as channels x frames, packed ones as one interleaved row.
    array = array.T if frame.format.is_planar else array.reshape(-1, frame.layout.nb_channels)
    return _to_float32(array)


# ---------------------------------------------------------------------------------------------------------
# Conversion


class _MonoSink:
    """Downmixes decoded blocks, enforces the duration limit as it goes and resamples incrementally.

    Incremental so peak memory is the mono output at the target rate, not the decoded source: a small
    FLAC of silence can declare hours of 8-channel 192 kHz audio. Small decoder frames (1152 samples for
    MP3) are pooled into blocks first, since each soxr call has a fixed cost.
    """

    def __init__(self, target_rate: int, limits: AudioLimits, what: str) -> None:
        """Start empty; the source rate comes with the first block."""
        self._target_rate = target_rate
        self._limits = limits
        self._what = what
        self._parts: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        self._pending_frames = 0
        self._rate: int | None = None
        self._stream: soxr.ResampleStream | None = None
        self._seconds = 0.0

    @property
    def empty(self) -> bool:
        """Whether any source samples arrived."""
        return self._seconds == 0.0

    def feed(self, block: np.ndarray, rate: int) -> None:
        """Add one float32 frames x channels block recorded at `rate`."""
        mono = _downmix(block)
        _check_finite(mono, self._what)
        self._seconds += len(mono) / rate
        if self._seconds > self._limits.max_duration_s:
            raise InvalidInput(
                f"{self._what} is longer than the limit of {self._limits.max_duration_s:g} s "
                f"(decoding stopped at {self._seconds:.1f} s); send a shorter clip or split it"
            )
        if rate != self._rate:
            # Some MP3/AAC streams switch rate mid-file; each stretch gets its own resampler.
            self._drain(last=True)
            self._rate = rate
            if rate != self._target_rate:
                self._stream = soxr.ResampleStream(
                    rate, self._target_rate, 1, dtype="float32", quality=_QUALITY
                )
        self._pending.append(mono)
        self._pending_frames += len(mono)
        if self._pending_frames >= _BLOCK_FRAMES:
            self._drain(last=False)

    def finish(self) -> np.ndarray:
        """Drain the resampler and return everything as one mono float32 array."""
        self._drain(last=True)
        if not self._parts:
            return np.zeros(0, dtype=np.float32)
        return np.concatenate(self._parts)

    def _drain(self, last: bool) -> None:
        chunk = np.concatenate(self._pending) if self._pending else np.zeros(0, dtype=np.float32)
        self._pending.clear()
        self._pending_frames = 0
        if self._stream is None:
            self._parts.append(chunk)
            return
        self._parts.append(self._stream.resample_chunk(chunk, last=last))
        if last:
            self._stream = None


def _pcm_to_mono(data: bytes, dtype: np.dtype, channels: int) -> np.ndarray:
    """Whole interleaved frames of raw PCM to mono float32; float input must be finite."""
    frames = np.frombuffer(data, dtype=dtype).reshape(-1, channels)
    mono = _downmix(_to_float32(frames))
    if dtype.kind == "f":
        _check_finite(mono, "the float32 audio")
    return mono


def _to_float32(array: np.ndarray) -> np.ndarray:
    """Scale integer PCM to [-1, 1) the way libsndfile and FFmpeg do (divide by 2**(bits-1))."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "u":
        # Unsigned PCM (8-bit WAV) is offset binary around the midpoint.
        half = float(2 ** (array.dtype.itemsize * 8 - 1))
        return ((array.astype(np.float32) - half) / half).astype(np.float32, copy=False)
    scale = np.float32(1.0 / 2 ** (array.dtype.itemsize * 8 - 1))
    return array.astype(np.float32) * scale


def _downmix(frames: np.ndarray) -> np.ndarray:
    """Average channels into one contiguous float32 signal (equal weights: no channel is privileged)."""
    if frames.shape[1] == 1:
        return np.ascontiguousarray(frames[:, 0], dtype=np.float32)
    return np.ascontiguousarray(frames.mean(axis=1, dtype=np.float32))


# ---------------------------------------------------------------------------------------------------------
# Validation


def _check_target_rate(rate: int) -> None:
    """Rates we choose ourselves (model config) are programming errors, not the caller's."""
    if not isinstance(rate, (int, np.integer)) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {rate!r}")


def _check_payload(data: bytes, limits: AudioLimits) -> None:
    """Size checks that cost nothing and come before any parsing."""
    if not data:
        raise InvalidInput("the audio payload is empty; send an encoded audio file or raw PCM samples")
    if len(data) > limits.max_payload_bytes:
        raise InvalidInput(
            f"the audio payload is {len(data)} bytes, over the limit of {limits.max_payload_bytes} bytes "
            f"({limits.max_payload_bytes / 2**20:g} MiB); send a shorter clip or a compressed format"
        )


def _check_raw_format(fmt: RawFormat, limits: AudioLimits) -> np.dtype:
    """Validate a declared raw format and return the numpy dtype of one sample."""
    dtype = RAW_ENCODINGS.get(str(fmt.encoding).lower())
    if dtype is None:
        raise InvalidInput(f"unknown raw audio encoding {fmt.encoding!r}; use {_RAW_ENCODINGS_HELP}")
    _check_rate_and_channels(fmt.sample_rate_hertz, fmt.channel_count, limits, "the raw audio")
    return dtype


def _check_rate_and_channels(rate: int, channels: int, limits: AudioLimits, what: str) -> None:
    """Rates and channel counts outside the limits are refused with the allowed range."""
    if not limits.min_sample_rate_hertz <= rate <= limits.max_sample_rate_hertz:
        raise InvalidInput(
            f"{what} has a sample rate of {rate} Hz, out of the allowed range "
            f"{limits.min_sample_rate_hertz}..{limits.max_sample_rate_hertz} Hz"
        )
    if not 1 <= channels <= limits.max_channels:
        raise InvalidInput(
            f"{what} has {channels} channels, out of the allowed range 1..{limits.max_channels} channels"
        )


def _check_duration(seconds: float, limits: AudioLimits, subject: str) -> None:
    """`subject` reads as the start of the sentence, e.g. 'the WAV file declares'."""
    if seconds > limits.max_duration_s:
        raise InvalidInput(
            f"{subject} {seconds:.1f} s of audio, over the limit of {limits.max_duration_s:g} s; "
            "send a shorter clip or split it"
        )


def _check_finite(mono: np.ndarray, what: str) -> None:
    """NaN or infinity would spread through the resampler's filter and poison every feature frame."""
    finite = np.isfinite(mono)
    if not finite.all():
        first = int(np.argmin(finite))
        raise InvalidInput(
            f"{what} contains {int(mono.size - finite.sum())} non-finite samples (NaN or infinity), "
            f"first at sample {first} after downmixing; samples must be finite, nominally in [-1, 1]"
        )


def _partial_frame_message(fmt: RawFormat, dtype: np.dtype, size: int, subject: str) -> str:
    """Explain frame arithmetic, since a split frame usually means a wrong encoding or channel count."""
    frame_bytes = dtype.itemsize * fmt.channel_count
    return (
        f"raw {fmt.encoding} audio with {fmt.channel_count} channel(s) comes in frames of {frame_bytes} bytes "
        f"({dtype.itemsize} bytes per sample x {fmt.channel_count}), but {subject} {size} bytes, not a "
        f"multiple of {frame_bytes} ({size % frame_bytes} bytes left over); check the declared encoding "
        "and channel count"
    )
