"""Live recognition on the client: options -> StreamingRecognitionConfig, audio chunks -> requests,
responses -> `StreamingResult` objects, and two audio sources (a recording replayed at real-time pace, and
the microphone through the optional `sounddevice` package: `pip install pipelined[mic]`).

A chunk is raw PCM `bytes` in the declared format, or a numpy array (float -> FLOAT32, int16 -> LINEAR16;
2-D arrays are frames x channels). A source object's `sample_rate`, `channels` and `encoding` attributes
become the stream's format unless the call names them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import queue
import threading
import time
import wave
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .v1 import audio_pb2, speech_pb2
from .wire import speech as asr
from .wire.durations import duration as _duration
from .wire.durations import seconds as _seconds

_ENCODINGS = {"linear16": audio_pb2.AUDIO_ENCODING_LINEAR16, "float32": audio_pb2.AUDIO_ENCODING_FLOAT32}
_EVENTS = {
    speech_pb2.SPEECH_EVENT_SPEECH_STARTED: "speech_started",
    speech_pb2.SPEECH_EVENT_SPEECH_ENDED: "speech_ended",
}
# Options of a live stream beyond the recognition arguments it shares with the pipeline call.
STREAM_OPTIONS = {
    "sampling_rate",
    "encoding",
    "channels",
    "interim_results",
    "speech_events",
    "min_decode_interval_s",
    "vad_threshold",
    "min_silence_s",
    "speech_padding_s",
}
# Recognition arguments of a live stream: those every recognition shares.
RECOGNITION_OPTIONS = asr.SHARED
DEFAULT_RATE = 16000


@dataclass(frozen=True)
class StreamingResult:
    """One result of a live stream, or a speech activity event (`event` set, no text).

    Interim results (`is_final` False) replace the previous interim; final results never change and
    follow each other in time. Times are seconds from the start of the stream.
    """

    text: str = ""
    is_final: bool = False
    stability: float = 0.0
    start: float | None = None
    end: float | None = None
    # {"text", "timestamp": (start, end)} per word, when `return_timestamps="word"` was asked.
    words: list[dict[str, Any]] = field(default_factory=list)
    language: str = ""
    # Seconds of the stream's audio the server had processed when it sent this.
    audio_processed: float = 0.0
    # Seconds from the arrival of the newest audio this result covers to its sending.
    latency: float | None = None
    # "speech_started" or "speech_ended" for events, None for transcript results.
    event: str | None = None
    event_time: float | None = None


def streaming_config(
    model: str, options: dict[str, Any], source: Any = None, first: Any = None
) -> speech_pb2.StreamingRecognitionConfig:
    """The first message of a stream, from call options, the source's format and the first chunk."""
    unknown = set(options) - STREAM_OPTIONS - RECOGNITION_OPTIONS
    if unknown:
        raise TypeError(f"unsupported live-stream argument(s): {', '.join(sorted(unknown))}")
    recognition = asr.recognition_config(
        model, {k: v for k, v in options.items() if k in RECOGNITION_OPTIONS}
    )
    encoding = options.get("encoding") or getattr(source, "encoding", None) or _encoding_of(first)
    if encoding not in _ENCODINGS:
        raise ValueError(f"encoding must be 'linear16' or 'float32', got {encoding!r}")
    rate = int(options.get("sampling_rate") or getattr(source, "sample_rate", None) or DEFAULT_RATE)
    channels = int(options.get("channels") or getattr(source, "channels", None) or _channels_of(first))
    config = speech_pb2.StreamingRecognitionConfig(
        config=recognition,
        audio_format=audio_pb2.RawAudioFormat(
            encoding=_ENCODINGS[encoding], sample_rate_hertz=rate, channel_count=channels
        ),
        interim_results=bool(options.get("interim_results", True)),
        voice_activity_events=bool(options.get("speech_events", True)),
    )
    if options.get("min_decode_interval_s"):
        config.min_decode_interval.CopyFrom(_duration(options["min_decode_interval_s"]))
    if options.get("vad_threshold"):
        config.endpointing.speech_threshold = float(options["vad_threshold"])
    if options.get("min_silence_s"):
        config.endpointing.min_silence.CopyFrom(_duration(options["min_silence_s"]))
    if options.get("speech_padding_s") is not None:
        config.endpointing.speech_padding.CopyFrom(_duration(options["speech_padding_s"]))
    return config


def _encoding_of(chunk: Any) -> str:
    if isinstance(chunk, np.ndarray) and chunk.dtype.kind == "f":
        return "float32"
    return "linear16"


def _channels_of(chunk: Any) -> int:
    return int(chunk.shape[1]) if isinstance(chunk, np.ndarray) and chunk.ndim == 2 else 1


def chunk_bytes(chunk: Any, encoding: int) -> bytes:
    """Raw little-endian PCM of one chunk in the stream's encoding."""
    if isinstance(chunk, bytes | bytearray | memoryview):
        return bytes(chunk)
    if isinstance(chunk, np.ndarray):
        if encoding == audio_pb2.AUDIO_ENCODING_FLOAT32:
            return np.ascontiguousarray(chunk, dtype="<f4").tobytes()
        if chunk.dtype.kind == "f":
            chunk = np.clip(chunk * 32768.0, -32768, 32767)
        return np.ascontiguousarray(chunk, dtype="<i2").tobytes()
    raise TypeError(f"an audio chunk must be bytes or a numpy array, not {type(chunk).__name__}")


def split_first(chunks: Iterable[Any]) -> tuple[Any, Iterator[Any]]:
    """The first chunk (to infer the format from) and an iterator over all chunks."""
    iterator = iter(chunks)
    for first in iterator:
        return first, itertools.chain([first], iterator)
    return None, iter(())


# How long the asyncio client holds a stream's audio back waiting for the server's first response (sent
# once the stream is admitted; a server from before that response sends none until it hears audio).
ADMISSION_WAIT_S = 2.0


def requests(
    config: speech_pb2.StreamingRecognitionConfig, chunks: Iterable[Any]
) -> Iterator[speech_pb2.StreamingRecognizeRequest]:
    yield speech_pb2.StreamingRecognizeRequest(streaming_config=config)
    encoding = config.audio_format.encoding
    for chunk in chunks:
        yield speech_pb2.StreamingRecognizeRequest(audio=chunk_bytes(chunk, encoding))


def results(response: speech_pb2.StreamingRecognizeResponse) -> list[StreamingResult]:
    """The results of one response, then its event, in that order."""
    processed = _seconds(response.audio_processed)
    latency = _seconds(response.processing_latency) if response.HasField("processing_latency") else None
    out = []
    for r in response.results:
        out.append(
            StreamingResult(
                text=r.text,
                is_final=r.is_final,
                stability=r.stability,
                start=_seconds(r.start_offset) if r.HasField("start_offset") else None,
                end=_seconds(r.end_offset) if r.HasField("end_offset") else None,
                words=[
                    {"text": w.text, "timestamp": (_seconds(w.start_offset), _seconds(w.end_offset))}
                    for w in r.words
                ],
                language=r.language,
                audio_processed=processed,
                latency=latency,
            )
        )
    if response.speech_event:
        out.append(
            StreamingResult(
                audio_processed=processed,
                event=_EVENTS.get(response.speech_event, str(response.speech_event)),
                event_time=_seconds(response.speech_event_offset),
            )
        )
    return out


class FileSource:
    """A recording as live audio: float32 chunks of `chunk_s` seconds, at real-time pace unless `realtime=False`.

    Reads 16-bit WAV with the standard library; other formats (FLAC, OGG, ...) need the `soundfile` package
    (`pip install 'pipelined[audio]'`).
    """

    encoding = "float32"

    def __init__(
        self, path: str | Path, chunk_s: float = 0.1, realtime: bool = True, speed: float = 1.0
    ) -> None:
        self.path = Path(path)
        self.samples, self.sample_rate = _read_audio(self.path)
        self.channels = 1 if self.samples.ndim == 1 else int(self.samples.shape[1])
        self.chunk_s = chunk_s
        self.realtime = realtime
        self.speed = speed
        # time.monotonic() when the last chunk was handed out (the end of the audio "arrived").
        self.finished_at: float | None = None

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate

    def __iter__(self) -> Iterator[np.ndarray]:
        step = max(1, int(self.chunk_s * self.sample_rate))
        started = time.monotonic()
        for i, at in enumerate(range(0, len(self.samples), step)):
            if self.realtime:
                # A chunk is sent once it has been "recorded": at the time of its end.
                due = started + (i + 1) * self.chunk_s / self.speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            yield self.samples[at : at + step]
        self.finished_at = time.monotonic()


def _read_audio(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        soundfile = None
    if soundfile is not None:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
        return np.asarray(data, dtype=np.float32), int(rate)
    if path.suffix.lower() != ".wav":
        raise ValueError(
            f"{path}: reading {path.suffix} files needs the soundfile package: pip install 'pipelined[audio]'"
        )
    with wave.open(str(path)) as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is read without soundfile")
        frames = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        channels = w.getnchannels()
        return (frames.reshape(-1, channels) if channels > 1 else frames), w.getframerate()


class MicrophoneSource:
    """The default (or a chosen) input device as 16-bit mono chunks; needs `sounddevice` (pipelined[mic])."""

    encoding = "linear16"
    channels = 1

    def __init__(self, sample_rate: int = DEFAULT_RATE, chunk_s: float = 0.1, device: Any = None) -> None:
        try:
            import sounddevice
        except (ImportError, OSError) as exc:
            raise RuntimeError(
                f"the microphone needs the sounddevice package and PortAudio: pip install 'pipelined[mic]' ({exc})"
            ) from exc
        self._sd = sounddevice
        self.sample_rate = sample_rate
        self.chunk_s = chunk_s
        self.device = device
        self._closed = False

    def close(self) -> None:
        """Stops the iteration after the current chunk (the stream then half-closes)."""
        self._closed = True

    def __iter__(self) -> Iterator[bytes]:
        chunks: queue.Queue[bytes] = queue.Queue()

        def on_audio(data: Any, frames: int, at: Any, status: Any) -> None:
            chunks.put(bytes(data))

        blocksize = int(self.chunk_s * self.sample_rate)
        with self._sd.RawInputStream(
            samplerate=self.sample_rate,
            blocksize=blocksize,
            channels=1,
            dtype="int16",
            device=self.device,
            callback=on_audio,
        ):
            while not self._closed:
                try:
                    yield chunks.get(timeout=0.5)
                except queue.Empty:
                    continue


_SAMPLE_BYTES = {audio_pb2.AUDIO_ENCODING_LINEAR16: 2, audio_pb2.AUDIO_ENCODING_FLOAT32: 4}


class ReplayBuffer:
    """The audio of a live stream since its last final result, so that a new stream can resume there
    after the connection broke (gRPC never retries a live stream: its audio is gone once sent).

    Every chunk is recorded as it is taken from the source (a chunk taken by a stream that then broke
    is replayed, not lost); final results drop what they cover. At most `max_s` seconds are kept: a
    stream with no final for longer resumes that far back, not further.
    """

    def __init__(
        self,
        config: speech_pb2.StreamingRecognitionConfig,
        chunks: Iterable[Any] | AsyncIterable[Any],
        max_s: float = 120.0,
    ) -> None:
        fmt = config.audio_format
        self.encoding = fmt.encoding
        self.bytes_per_s = fmt.sample_rate_hertz * max(fmt.channel_count, 1) * _SAMPLE_BYTES[fmt.encoding]
        self.max_bytes = int(max_s * self.bytes_per_s)
        self._source: Any = chunks.__aiter__() if isinstance(chunks, AsyncIterable) else iter(chunks)
        self._lock = threading.Lock()
        self._pull = threading.Lock()
        self._apull: asyncio.Lock | None = None
        # (start in the whole stream, in bytes; raw PCM), oldest first.
        self._kept: list[tuple[int, bytes]] = []
        self._kept_bytes = 0
        self._taken = 0
        self._generation = 0

    def resume_offset_s(self) -> float:
        """Where a new stream starts, in seconds from the start of the whole stream."""
        with self._lock:
            return (self._kept[0][0] if self._kept else self._taken) / self.bytes_per_s

    def committed(self, end_s: float) -> None:
        """A final result covers the audio up to `end_s` (seconds from the start of the whole stream)."""
        end = int(end_s * self.bytes_per_s)
        with self._lock:
            while self._kept and self._kept[0][0] + len(self._kept[0][1]) <= end:
                self._kept_bytes -= len(self._kept.pop(0)[1])

    def _start(self) -> tuple[int, int]:
        """A new connection's generation (retiring the previous one) and the byte it starts at."""
        with self._lock:
            self._generation += 1
            return self._generation, self._kept[0][0] if self._kept else self._taken

    def _next_kept(self, generation: int, position: int) -> tuple[bool, tuple[int, bytes] | None]:
        """(still current, the kept (start, chunk) at or after byte `position`, if any)."""
        with self._lock:
            if generation != self._generation:
                return False, None
            return True, next(((start, data) for start, data in self._kept if start >= position), None)

    def chunks(self) -> Iterator[bytes]:
        """One connection's audio: what is kept, then new chunks from the source. Starting another
        connection retires this one: a chunk its sender was still waiting for when the call broke is
        kept and sent by the new one."""
        generation, position = self._start()
        while True:
            current, kept = self._next_kept(generation, position)
            if not current:
                return
            if kept is not None:
                position = kept[0] + len(kept[1])
                yield kept[1]
                continue
            with self._pull:  # one reader of the source at a time (a generator cannot be shared)
                chunk = next(self._source, None)
                if chunk is None:
                    return
                self._keep(chunk_bytes(chunk, self.encoding))

    async def achunks(self) -> AsyncIterator[bytes]:
        """`chunks` for an asyncio stream (the source may be sync or async)."""
        generation, position = self._start()
        self._apull = self._apull or asyncio.Lock()
        while True:
            current, kept = self._next_kept(generation, position)
            if not current:
                return
            if kept is not None:
                position = kept[0] + len(kept[1])
                yield kept[1]
                continue
            async with self._apull:
                if isinstance(self._source, AsyncIterator):
                    chunk = await anext(self._source, None)
                else:
                    chunk = next(self._source, None)
                if chunk is None:
                    return
                self._keep(chunk_bytes(chunk, self.encoding))

    def _keep(self, data: bytes) -> None:
        with self._lock:
            self._kept.append((self._taken, data))
            self._taken += len(data)
            self._kept_bytes += len(data)
            while self._kept_bytes > self.max_bytes and len(self._kept) > 1:
                self._kept_bytes -= len(self._kept.pop(0)[1])


def resumed_results(
    response: speech_pb2.StreamingRecognizeResponse, replay: ReplayBuffer, offset_s: float
) -> list[StreamingResult]:
    """The results of one response of a stream that started `offset_s` into the audio, in whole-stream
    times; its finals release the audio they cover from the replay buffer."""
    out = [shifted(result, offset_s) for result in results(response)]
    for result in out:
        if result.is_final and result.end is not None:
            replay.committed(result.end)
    return out


def shifted(result: StreamingResult, offset_s: float) -> StreamingResult:
    """A result of a resumed stream with its times counted from the start of the whole stream."""
    if not offset_s:
        return result

    def add(t: float | None) -> float | None:
        return None if t is None else t + offset_s

    words = [
        {**w, "timestamp": (w["timestamp"][0] + offset_s, w["timestamp"][1] + offset_s)} for w in result.words
    ]
    return dataclasses.replace(
        result,
        start=add(result.start),
        end=add(result.end),
        words=words,
        audio_processed=result.audio_processed + offset_s,
        event_time=add(result.event_time),
    )
