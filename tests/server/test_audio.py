"""Offline tests for server-side audio decoding, resampling and validation (pipelined_server.audio)."""

from __future__ import annotations

import importlib.util
import io
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

# Lets the tests run from a plain checkout where the package is not pip-installed.
if importlib.util.find_spec("pipelined_server") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "server"))

from pipelined_server import audio  # noqa: E402
from pipelined_server.audio import AudioLimits, RawFormat, StreamResampler  # noqa: E402
from pipelined_server.errors import InvalidInput  # noqa: E402

TARGET = 16000
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


# ---------------------------------------------------------------------------------------------------------
# Signal helpers


def tone(freq: float, rate: int, seconds: float, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    """A sine as float32 frames x channels (every channel identical)."""
    t = np.arange(round(rate * seconds)) / rate
    mono = (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    """Frequency of the strongest FFT bin, windowed so leakage does not move the peak."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def sf_encode(signal: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, signal, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def av_encode(signal: np.ndarray, rate: int, container: str, codec: str) -> bytes:
    """Encode with FFmpeg through PyAV, in memory; skips the test where this build lacks the encoder."""
    layout = {1: "mono", 2: "stereo"}[signal.shape[1]]
    buffer = io.BytesIO()
    try:
        with av.open(buffer, mode="w", format=container) as out:
            stream = out.add_stream(codec, rate=rate, layout=layout)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(signal.T), format="fltp", layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        pytest.skip(f"this FFmpeg build cannot encode {codec} in {container}: {exc}")
    return buffer.getvalue()


def raw_linear16(signal: np.ndarray) -> bytes:
    return np.round(signal * 32767).astype("<i2").tobytes()


# ---------------------------------------------------------------------------------------------------------
# Encoded files


SOUNDFILE_CASES = [
    ("WAV", "PCM_16", 44100, 2),
    ("WAV", "PCM_24", 22050, 1),
    ("WAV", "FLOAT", 8000, 1),
    ("FLAC", "PCM_16", 48000, 2),
    ("OGG", "VORBIS", 44100, 2),
    ("OGG", "OPUS", 48000, 1),
    ("AIFF", "PCM_16", 44100, 1),
]


@pytest.mark.parametrize(("fmt", "subtype", "rate", "channels"), SOUNDFILE_CASES)
def test_decode_soundfile_formats(fmt: str, subtype: str, rate: int, channels: int) -> None:
    data = sf_encode(tone(440, rate, 1.5, channels), rate, fmt, subtype)
    out = audio.decode_encoded(data, TARGET)
    assert out.dtype == np.float32 and out.ndim == 1
    lossy = subtype in {"VORBIS", "OPUS"}
    assert abs(len(out) / TARGET - 1.5) < (0.05 if lossy else 0.001)
    assert abs(dominant_hz(out, TARGET) - 440) < 2
    # A 0.5-amplitude sine has RMS 0.354; resampling and identical channels must not change it.
    assert rms(out) == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


# Tolerances: lossy codecs pad to whole frames and gapless metadata trims it, except raw ADTS AAC,
# which has nowhere to store its 1024-sample priming and tail padding (about 90 ms at 22.05 kHz).
PYAV_CASES = [
    ("mp3", "libmp3lame", 44100, 0.05),
    ("ogg", "libopus", 48000, 0.05),
    ("webm", "libopus", 48000, 0.05),
    ("mp4", "aac", 44100, 0.05),
    ("adts", "aac", 22050, 0.1),
]


@pytest.mark.parametrize(("container", "codec", "rate", "tolerance_s"), PYAV_CASES)
def test_decode_ffmpeg_encoded_formats(container: str, codec: str, rate: int, tolerance_s: float) -> None:
    data = av_encode(tone(1000, rate, 2.0, channels=2), rate, container, codec)
    out = audio.decode_encoded(data, TARGET)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) / TARGET - 2.0) < tolerance_s
    assert abs(dominant_hz(out, TARGET) - 1000) < 2
    assert rms(out) == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


def test_ffmpeg_fallback_agrees_with_libsndfile_on_mp3() -> None:
    data = av_encode(tone(440, 44100, 1.0), 44100, "mp3", "libmp3lame")
    via_soundfile = audio.decode_encoded(data, TARGET)
    via_ffmpeg = audio._decode_with_pyav(data, TARGET, audio.DEFAULT_LIMITS)
    assert abs(len(via_soundfile) - len(via_ffmpeg)) <= 2
    n = min(len(via_soundfile), len(via_ffmpeg))
    np.testing.assert_allclose(via_soundfile[:n], via_ffmpeg[:n], atol=1e-3)


def test_downmix_averages_channels() -> None:
    left = tone(440, TARGET, 0.5)[:, 0]
    right = tone(1000, TARGET, 0.5, amplitude=0.25)[:, 0]
    data = sf_encode(np.stack([left, right], axis=1), TARGET, "WAV", "FLOAT")
    out = audio.decode_encoded(data, TARGET)
    np.testing.assert_allclose(out, (left + right) / 2, atol=1e-7)


def test_opposite_channels_cancel() -> None:
    signal = tone(440, 44100, 0.5, channels=2)
    signal[:, 1] *= -1
    out = audio.decode_encoded(sf_encode(signal, 44100, "WAV", "FLOAT"), TARGET)
    assert np.max(np.abs(out)) < 1e-6


def test_same_rate_is_sample_exact() -> None:
    signal = tone(440, TARGET, 0.3)
    out = audio.decode_encoded(sf_encode(signal, TARGET, "WAV", "FLOAT"), TARGET)
    np.testing.assert_array_equal(out, signal[:, 0])


def test_decode_to_other_target_rate() -> None:
    out = audio.decode_encoded(sf_encode(tone(3000, 16000, 1.0), 16000, "WAV", "PCM_16"), 24000)
    assert len(out) == 24000
    assert abs(dominant_hz(out, 24000) - 3000) < 2


def test_container_without_audio_stream() -> None:
    buffer = io.BytesIO()
    try:
        with av.open(buffer, mode="w", format="matroska") as out:
            stream = out.add_stream("mpeg4", rate=10)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
            for _ in range(3):
                frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
    except (av.FFmpegError, ValueError) as exc:
        pytest.skip(f"this FFmpeg build cannot encode a test video: {exc}")
    with pytest.raises(InvalidInput, match=r"holds no audio stream \(found: video\)"):
        audio.decode_encoded(buffer.getvalue(), TARGET)


def test_ffconcat_payload_cannot_read_local_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg's concat demuxer would open files named in the payload; nested opens must stay blocked.
    (tmp_path / "secret.wav").write_bytes(sf_encode(tone(440, TARGET, 1.0), TARGET, "WAV", "PCM_16"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InvalidInput, match="could not decode"):
        audio.decode_encoded(b"ffconcat version 1.0\nfile secret.wav\n", TARGET)


# ---------------------------------------------------------------------------------------------------------
# Raw PCM


def test_raw_linear16_round_trip() -> None:
    ints = np.array([0, 1, -1, 32767, -32768, 1234], dtype="<i2")
    out = audio.decode_raw(ints.tobytes(), RawFormat("linear16", TARGET, 1), TARGET)
    np.testing.assert_array_equal(out, ints.astype(np.float32) / 32768)


def test_raw_float32_round_trip() -> None:
    signal = tone(440, TARGET, 0.25)[:, 0]
    out = audio.decode_raw(signal.astype("<f4").tobytes(), RawFormat("float32", TARGET, 1), TARGET)
    np.testing.assert_array_equal(out, signal)


def test_raw_encoding_name_is_case_insensitive() -> None:
    out = audio.decode_raw(b"\x00\x00" * 10, RawFormat("LINEAR16", TARGET, 1), TARGET)
    assert out.shape == (10,)


def test_raw_stereo_downmix_and_resample() -> None:
    signal = tone(440, 48000, 1.0, channels=2)
    signal[:, 1] = 0
    out = audio.decode_raw(raw_linear16(signal), RawFormat("linear16", 48000, 2), TARGET)
    assert len(out) == TARGET
    assert abs(dominant_hz(out, TARGET) - 440) < 2
    # One silent channel of two halves the amplitude.
    assert rms(out) == pytest.approx(0.25 / np.sqrt(2), rel=0.02)


def test_resample_preserves_tone_and_length() -> None:
    signal = tone(1000, 44100, 1.0)[:, 0]
    out = audio.resample(signal, 44100, TARGET)
    assert out.dtype == np.float32 and len(out) == TARGET
    assert abs(dominant_hz(out, TARGET) - 1000) < 2
    np.testing.assert_array_equal(audio.resample(signal, 44100, 44100), signal)


# ---------------------------------------------------------------------------------------------------------
# Streaming


def _feed_in_chunks(resampler: StreamResampler, data: bytes, sizes: list[int]) -> np.ndarray:
    parts, offset, i = [], 0, 0
    while offset < len(data):
        size = sizes[i % len(sizes)]
        parts.append(resampler.push(data[offset : offset + size]))
        offset += size
        i += 1
    parts.append(resampler.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize(
    ("encoding", "rate", "channels"),
    [("linear16", 44100, 2), ("float32", 48000, 1), ("linear16", TARGET, 3), ("float32", 8000, 2)],
)
def test_stream_resampler_matches_one_shot(encoding: str, rate: int, channels: int) -> None:
    signal = tone(440, rate, 1.3, channels)
    signal[:, -1] *= 0.5
    data = raw_linear16(signal) if encoding == "linear16" else signal.astype("<f4").tobytes()
    fmt = RawFormat(encoding, rate, channels)
    expected = audio.decode_raw(data, fmt, TARGET)
    # Odd sizes split frames and even single samples across pushes.
    streamed = _feed_in_chunks(StreamResampler(fmt, TARGET), data, [1, 3, 7, 1001, 4097, 2, 65537])
    assert abs(len(streamed) - len(expected)) <= 1
    n = min(len(streamed), len(expected))
    np.testing.assert_allclose(streamed[:n], expected[:n], atol=1e-5)


def test_stream_resampler_tiny_pushes_return_empty_arrays() -> None:
    resampler = StreamResampler(RawFormat("linear16", TARGET, 2), TARGET)
    first = resampler.push(b"\x01")
    assert first.dtype == np.float32 and first.shape == (0,)
    assert resampler.push(b"\x00\x00\x00").shape == (1,)
    assert resampler.flush().shape == (0,)


def test_stream_resampler_rejects_trailing_partial_frame() -> None:
    resampler = StreamResampler(RawFormat("float32", TARGET, 2), TARGET)
    resampler.push(b"\x00" * 13)
    with pytest.raises(InvalidInput, match=r"frames of 8 bytes.*ended with 5 bytes"):
        resampler.flush()


def test_stream_resampler_rejects_non_finite_chunk_and_keeps_going() -> None:
    resampler = StreamResampler(RawFormat("float32", TARGET, 1), TARGET)
    with pytest.raises(InvalidInput, match="non-finite"):
        resampler.push(np.array([0.0, np.nan], dtype="<f4").tobytes())
    assert resampler.push(np.array([0.25], dtype="<f4").tobytes()).tolist() == [0.25]


def test_stream_resampler_use_after_flush() -> None:
    resampler = StreamResampler(RawFormat("linear16", TARGET, 1), TARGET)
    resampler.flush()
    with pytest.raises(RuntimeError):
        resampler.push(b"\x00\x00")


def test_stream_resampler_validates_format() -> None:
    with pytest.raises(InvalidInput, match="unknown raw audio encoding 'mulaw'"):
        StreamResampler(RawFormat("mulaw", 8000, 1), TARGET)
    with pytest.raises(InvalidInput, match="9 channels"):
        StreamResampler(RawFormat("linear16", TARGET, 9), TARGET)


# ---------------------------------------------------------------------------------------------------------
# Validation


def test_empty_payload() -> None:
    with pytest.raises(InvalidInput, match="payload is empty"):
        audio.decode_encoded(b"", TARGET)
    with pytest.raises(InvalidInput, match="payload is empty"):
        audio.decode_raw(b"", RawFormat("linear16", TARGET, 1), TARGET)


def test_payload_over_limit() -> None:
    limits = AudioLimits(max_payload_bytes=1000)
    with pytest.raises(InvalidInput, match=r"1002 bytes, over the limit of 1000 bytes"):
        audio.decode_encoded(b"\x00" * 1002, TARGET, limits)
    with pytest.raises(InvalidInput, match=r"over the limit of 1000 bytes"):
        audio.decode_raw(b"\x00" * 1002, RawFormat("linear16", TARGET, 1), TARGET, limits)


@pytest.mark.parametrize("payload", [b"this is not audio at all" * 10, bytes(range(256)) * 4, b"\x00"])
def test_undecodable_bytes_name_both_decoders(payload: bytes) -> None:
    with pytest.raises(InvalidInput) as info:
        audio.decode_encoded(payload, TARGET)
    message = info.value.message
    assert "could not decode" in message
    assert "libsndfile" in message and "WAV" in message and "FFmpeg" in message
    assert "BytesIO" not in message and "Errno" not in message


def test_truncated_file_header_is_undecodable() -> None:
    data = sf_encode(tone(440, TARGET, 1.0), TARGET, "FLAC", "PCM_16")
    with pytest.raises(InvalidInput, match="could not decode"):
        audio.decode_encoded(data[:20], TARGET)


@pytest.mark.parametrize(
    ("encoding", "channels", "size", "frame"),
    [("linear16", 1, 1001, 2), ("linear16", 2, 1002, 4), ("float32", 1, 6, 4), ("float32", 3, 25, 12)],
)
def test_raw_length_not_multiple_of_frame(encoding: str, channels: int, size: int, frame: int) -> None:
    with pytest.raises(
        InvalidInput, match=f"frames of {frame} bytes.*{size} bytes, not a multiple of {frame}"
    ):
        audio.decode_raw(b"\x00" * size, RawFormat(encoding, TARGET, channels), TARGET)


@pytest.mark.parametrize("encoding", ["mulaw", "pcm_s24le", "", "float64"])
def test_unknown_raw_encoding(encoding: str) -> None:
    with pytest.raises(InvalidInput, match="unknown raw audio encoding") as info:
        audio.decode_raw(b"\x00" * 8, RawFormat(encoding, TARGET, 1), TARGET)
    assert "'linear16'" in info.value.message and "'float32'" in info.value.message


@pytest.mark.parametrize("rate", [0, 1000, 3999, 192001, 384000])
def test_raw_sample_rate_out_of_range(rate: int) -> None:
    with pytest.raises(
        InvalidInput, match=rf"sample rate of {rate} Hz, out of the allowed range 4000\.\.192000"
    ):
        audio.decode_raw(b"\x00" * 8, RawFormat("linear16", rate, 1), TARGET)


@pytest.mark.parametrize("channels", [0, -1, 9])
def test_raw_channel_count_out_of_range(channels: int) -> None:
    with pytest.raises(InvalidInput, match=rf"{channels} channels, out of the allowed range 1\.\.8"):
        audio.decode_raw(b"\x00" * 72, RawFormat("linear16", TARGET, channels), TARGET)


def test_encoded_sample_rate_out_of_range() -> None:
    data = sf_encode(tone(100, 2000, 1.0), 2000, "WAV", "PCM_16")
    with pytest.raises(InvalidInput, match=r"WAV file has a sample rate of 2000 Hz.*4000\.\.192000"):
        audio.decode_encoded(data, TARGET)


def test_encoded_channel_count_out_of_range() -> None:
    data = sf_encode(tone(440, TARGET, 0.1, channels=10), TARGET, "WAV", "PCM_16")
    with pytest.raises(InvalidInput, match=r"10 channels, out of the allowed range 1\.\.8"):
        audio.decode_encoded(data, TARGET)
    audio.decode_encoded(data, TARGET, AudioLimits(max_channels=16))


def test_zero_samples() -> None:
    data = sf_encode(np.zeros((0, 1), dtype=np.float32), TARGET, "WAV", "PCM_16")
    with pytest.raises(InvalidInput, match="zero samples"):
        audio.decode_encoded(data, TARGET)


def test_raw_duration_over_limit() -> None:
    limits = AudioLimits(max_duration_s=1.0)
    audio.decode_raw(b"\x00\x00" * TARGET, RawFormat("linear16", TARGET, 1), TARGET, limits)
    with pytest.raises(InvalidInput, match=r"2\.0 s of audio, over the limit of 1 s"):
        audio.decode_raw(b"\x00\x00" * 2 * TARGET, RawFormat("linear16", TARGET, 1), TARGET, limits)


def test_encoded_duration_over_limit_fails_on_header() -> None:
    data = sf_encode(tone(440, TARGET, 2.0), TARGET, "FLAC", "PCM_16")
    with pytest.raises(InvalidInput, match=r"FLAC file declares 2\.0 s of audio, over the limit of 1\.5 s"):
        audio.decode_encoded(data, TARGET, AudioLimits(max_duration_s=1.5))


def test_ffmpeg_duration_over_limit_fails_on_header() -> None:
    data = av_encode(tone(440, 44100, 2.0), 44100, "mp4", "aac")
    with pytest.raises(InvalidInput, match=r"declares 2\.\d s of audio, over the limit of 1\.5 s"):
        audio.decode_encoded(data, TARGET, AudioLimits(max_duration_s=1.5))


def test_duration_without_header_is_enforced_while_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    # Streams with no declared duration (or one that lies) are stopped once decoding passes the limit.
    monkeypatch.setattr(audio, "_declared_seconds", lambda container, stream: None)
    data = av_encode(tone(440, 44100, 2.0), 44100, "adts", "aac")
    with pytest.raises(InvalidInput, match=r"longer than the limit of 1\.5 s \(decoding stopped at 1\.5"):
        audio.decode_encoded(data, TARGET, AudioLimits(max_duration_s=1.5))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples(bad: float) -> None:
    samples = np.array([0.0, 0.5, bad, 0.25], dtype="<f4")
    with pytest.raises(InvalidInput, match=r"float32 audio contains 1 non-finite samples.*first at sample 2"):
        audio.decode_raw(samples.tobytes(), RawFormat("float32", TARGET, 1), TARGET)


def test_non_finite_samples_in_float_wav() -> None:
    signal = tone(440, TARGET, 0.1)
    signal[100, 0] = np.nan
    with pytest.raises(InvalidInput, match="WAV file contains 1 non-finite samples"):
        audio.decode_encoded(sf_encode(signal, TARGET, "WAV", "FLOAT"), TARGET)


def test_invalid_limits_and_target_rate() -> None:
    with pytest.raises(ValueError):
        AudioLimits(min_sample_rate_hertz=48000, max_sample_rate_hertz=8000)
    with pytest.raises(ValueError):
        AudioLimits(max_payload_bytes=0)
    with pytest.raises(ValueError):
        audio.decode_raw(b"\x00\x00", RawFormat("linear16", TARGET, 1), 0)


# ---------------------------------------------------------------------------------------------------------
# Output


def test_encode_wav_round_trip() -> None:
    signal = tone(440, 22050, 0.5)[:, 0]
    data = audio.encode_wav(signal, 22050)
    info = sf.info(io.BytesIO(data))
    assert (info.format, info.subtype, info.samplerate, info.channels) == ("WAV", "PCM_16", 22050, 1)
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    np.testing.assert_allclose(decoded, signal, atol=1 / 32767)


def test_encode_wav_clips_and_zeroes_non_finite() -> None:
    data = audio.encode_wav(np.array([2.0, -2.0, np.nan, np.inf, 0.5], dtype=np.float32), TARGET)
    decoded, _ = sf.read(io.BytesIO(data), dtype="int16")
    assert decoded.tolist() == [32767, -32767, 0, 32767, 16384]


@pytest.mark.parametrize("shape", [(2, 1000), (1000, 2), (1, 1000), (1000, 1)])
def test_encode_wav_channel_layouts(shape: tuple[int, int]) -> None:
    data = audio.encode_wav(np.zeros(shape, dtype=np.float32), TARGET)
    info = sf.info(io.BytesIO(data))
    assert (info.frames, info.channels) == (1000, min(shape))


# ---------------------------------------------------------------------------------------------------------
# Real recordings from ../shared/data


def _manifest_audio() -> list:
    manifest = SHARED_DATA / "manifest.json"
    if not manifest.is_file():
        reason = f"shared data folder absent ({SHARED_DATA}); real-recording tests need it"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-shared-data")]
    entries = json.loads(manifest.read_text())
    return [pytest.param(e, id=e["file"]) for e in entries if "duration_s" in e]


@pytest.mark.shared_data
@pytest.mark.parametrize("entry", _manifest_audio())
def test_real_recording_duration(entry: dict) -> None:
    path = SHARED_DATA / entry["file"]
    if not path.is_file():
        pytest.skip(f"{path} listed in the manifest but missing")
    out = audio.decode_encoded(path.read_bytes(), TARGET)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) / TARGET - entry["duration_s"]) < 0.05
    assert rms(out) > 1e-3, "speech should not decode to silence"


@pytest.mark.shared_data
@pytest.mark.parametrize(
    "entry",
    [p for p in _manifest_audio() if p.values[0] is None or p.values[0]["container"] in {"MP3", "OGG"}],
)
def test_real_compressed_recording_via_ffmpeg(entry: dict) -> None:
    # libsndfile reads these first; the FFmpeg fallback must agree on duration for the same bytes.
    path = SHARED_DATA / entry["file"]
    if not path.is_file():
        pytest.skip(f"{path} listed in the manifest but missing")
    out = audio._decode_with_pyav(path.read_bytes(), TARGET, audio.DEFAULT_LIMITS)
    assert abs(len(out) / TARGET - entry["duration_s"]) < 0.05
