"""StreamingRecognitionConfig -> validated stream options and the pipeline arguments of its decode steps."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from pipelined.v1 import speech_pb2

from ..audio import RawFormat
from ..config import InputLimits, StreamingLimits
from ..errors import InvalidInput
from ..registry import ModelInstance
from ..tasks import asr, whisper_alignatt, whisper_context, whisper_language, whisper_prefix
from ..tasks.audio_input import raw_format
from ..tasks.durations import to_seconds

DEFAULT_DECODE_INTERVAL_S = 1.0
MAX_DECODE_INTERVAL_S = 10.0
DEFAULT_THRESHOLD = 0.5
DEFAULT_MIN_SILENCE_S = 0.5
DEFAULT_PADDING_S = 0.2
# A Whisper stream decode generates at most this many tokens per second of its window (rounded up to
# `_TOKEN_CAP_STEP_S`), plus `_TOKEN_CAP_BASE`. Fast speech (6-8 words/s) takes 8-11 tokens/s; a decode caught
# in a repetition loop ("produced the block books, produced the block books, ...") ran to Whisper's 448
# tokens instead: 7.1 s for a 4.2 s window of tiny.en, and the stream's next results waited behind it
# (bench/asr_streaming.py --streams 1 --minutes 5: final lag max 6.1-7.7 s, against p95 1.7 s).
_TOKENS_PER_S = 16
_TOKEN_CAP_BASE = 16
# Windows are capped per started 5 s, so that decodes of similar windows keep one batching key.
_TOKEN_CAP_STEP_S = 5.0
_WHISPER_POSITIONS = 448
# Start of transcript, language, task, no-timestamps.
_PROMPT_TOKENS = 4


@dataclass(frozen=True)
class StreamOptions:
    audio_format: RawFormat
    # Pipeline call arguments of the decode steps whose words may be final (timestamps always on: they
    # place words and cuts)...
    kwargs: dict[str, Any]
    # ...and of the interim re-decodes (for Whisper: a short encoder margin and the AlignAtt stop).
    interim_kwargs: dict[str, Any]
    interim_results: bool
    word_times: bool
    events: bool
    decode_interval_s: float
    threshold: float
    min_silence_s: float
    padding_s: float
    language: str
    # Whether decodes start with the window's final words forced (Whisper; see tasks/whisper_prefix.py).
    force_prefix: bool = False
    # Whether the stream detects its language once and then gives it to every decode (a multilingual
    # Whisper with no language asked for; see tasks/whisper_language.py).
    detect_language: bool = False
    # Whether decodes get a token cap by window length (Whisper; see `_TOKENS_PER_S`).
    cap_tokens: bool = False
    # The shorter interval of re-decodes that only use a free replica (`streaming.idle_decode_interval_s`);
    # None when the client chose its interval.
    idle_decode_interval_s: float | None = None

    def capped(self, kwargs: dict[str, Any], duration_s: float, forced_words: int = 0) -> dict[str, Any]:
        """`kwargs` for a decode of `duration_s` of audio with `forced_words` forced, with the token cap when
        the stream has one. Whisper refuses a decode whose prompt, forced tokens and cap pass its 448
        positions: a forced word is counted as 3 tokens."""
        if not self.cap_tokens:
            return kwargs
        steps = max(1, math.ceil(duration_s / _TOKEN_CAP_STEP_S - 1e-9))
        cap = _TOKEN_CAP_BASE + math.ceil(_TOKENS_PER_S * steps * _TOKEN_CAP_STEP_S)
        cap = max(_TOKEN_CAP_BASE, min(cap, _WHISPER_POSITIONS - _PROMPT_TOKENS - 3 * forced_words))
        return {**kwargs, "generate_kwargs": {**kwargs.get("generate_kwargs", {}), "max_new_tokens": cap}}

    def with_language(self, language: str) -> StreamOptions:
        """These options with `language` given to every decode (and reported on results)."""

        def given(kwargs: dict[str, Any]) -> dict[str, Any]:
            return {**kwargs, "generate_kwargs": {**kwargs.get("generate_kwargs", {}), "language": language}}

        return replace(
            self,
            kwargs=given(self.kwargs),
            interim_kwargs=given(self.interim_kwargs),
            language=language,
            detect_language=False,
        )


def _seconds(config: Any, name: str, default: float) -> float:
    if not config.HasField(name):
        return default
    value = to_seconds(getattr(config, name))
    if value < 0:
        raise InvalidInput(f"{name} must not be negative, got {value} s")
    return value


def stream_options(
    config: speech_pb2.StreamingRecognitionConfig,
    instance: ModelInstance,
    limits: InputLimits,
    streaming: StreamingLimits | None = None,
) -> StreamOptions:
    if not config.HasField("audio_format"):
        raise InvalidInput(
            "streaming_config.audio_format is required (encoding, sample_rate_hertz, channel_count)"
        )
    recognition = config.config
    kind = asr.model_kind(instance)
    word_times = recognition.timestamps == speech_pb2.TIMESTAMP_GRANULARITY_WORD
    if recognition.timestamps == speech_pb2.TIMESTAMP_GRANULARITY_CHAR:
        raise InvalidInput("live streams return WORD timestamps or none, not CHAR")
    kwargs = asr.call_kwargs(recognition, kind, limits)
    force_prefix = detect_language = False
    if kind == asr.WHISPER:
        detect_language = (
            not recognition.language
            and (streaming is None or streaming.detect_language_once)
            and whisper_language.detects(getattr(instance.pipeline, "model", None))
        )
        force_prefix = (
            streaming is not None
            and streaming.force_committed_prefix
            and whisper_prefix.installed(getattr(instance.pipeline, "model", None))
        )
        # Word times (cross-attention alignment heads + DTW) whatever the client asked: segment times
        # spread over a segment's words put its end at the window's end when Whisper skipped speech
        # there, and a window cut at that "word end" lost the speech (StreamSession._slide).
        kwargs["return_timestamps"] = "word"
        interim_kwargs = kwargs = _whisper_windows(kwargs, streaming)
        if (
            streaming is not None
            and streaming.interim_alignatt_s is not None
            and whisper_alignatt.installed(getattr(instance.pipeline, "model", None))
        ):
            interim_kwargs = {
                **kwargs,
                whisper_context.KWARG: streaming.interim_encoder_margin_s,
                whisper_alignatt.KWARG: streaming.interim_alignatt_s,
            }
    elif kind.startswith("ctc"):
        kwargs["return_timestamps"] = "word"
        interim_kwargs = kwargs
    else:
        raise InvalidInput(
            f"live streams need a Whisper or CTC model; {instance.name!r} is {kind or 'neither'}"
        )

    chosen = _seconds(config, "min_decode_interval", 0.0)
    interval = chosen or DEFAULT_DECODE_INTERVAL_S
    idle_interval = None if chosen or streaming is None else streaming.idle_decode_interval_s
    if idle_interval is not None and idle_interval >= interval:
        idle_interval = None
    if interval > MAX_DECODE_INTERVAL_S:
        raise InvalidInput(f"min_decode_interval must be at most {MAX_DECODE_INTERVAL_S} s, got {interval} s")
    endpointing = config.endpointing
    threshold = endpointing.speech_threshold or DEFAULT_THRESHOLD
    if not 0 < threshold < 1:
        raise InvalidInput(f"endpointing.speech_threshold must be in (0, 1), got {threshold}")
    min_silence = _seconds(endpointing, "min_silence", 0.0) or DEFAULT_MIN_SILENCE_S
    padding = _seconds(endpointing, "speech_padding", DEFAULT_PADDING_S)
    if min_silence > 10 or padding > 2:
        raise InvalidInput("endpointing.min_silence must be at most 10 s and speech_padding at most 2 s")
    return StreamOptions(
        audio_format=raw_format(config.audio_format, instance.sampling_rate),
        kwargs=kwargs,
        interim_kwargs=interim_kwargs,
        interim_results=config.interim_results,
        word_times=word_times,
        events=config.voice_activity_events,
        decode_interval_s=interval,
        threshold=threshold,
        min_silence_s=min_silence,
        padding_s=padding,
        language=recognition.language,
        force_prefix=force_prefix,
        detect_language=detect_language,
        cap_tokens=kind == asr.WHISPER,
        idle_decode_interval_s=idle_interval,
    )


def _whisper_windows(kwargs: dict[str, Any], streaming: StreamingLimits | None) -> dict[str, Any]:
    """Final decodes encode their window plus `encoder_margin_s` (tasks/whisper_context.py)."""
    if streaming is None or streaming.encoder_margin_s is None:
        return kwargs
    return {**kwargs, whisper_context.KWARG: streaming.encoder_margin_s}
