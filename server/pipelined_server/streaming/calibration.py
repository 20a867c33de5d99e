"""Start-up calibration: the share of a model that one live stream takes, measured before the model serves.

Admission (admission.py) refuses a stream that would push its model past `admission_max_utilization`,
from the share one real-time stream takes. Measured from the streams' own decodes, that share exists only
once streams have run: every fresh worker process (a start, a restart, a scale-out; `workers: auto` has
one per core) admitted blind up to `streaming.max_streams`, and 8 real-time tiny.en streams on 2 cores
were 5 admitted, final lag p95 12.8 s, max 38.6 s (bench/asr_streaming.py --minutes 5 --streams 8).

So each worker, before its model reports SERVING, decodes what one stream of continuous speech submits,
as the same scheduler items (decode.decode_window, the stream's final-decode arguments): one utterance's
interim windows, from the first decode (session.FIRST_DECODE_S) growing by the decode interval to the
length at which a window slides (`max_window_s`) and one interval past it, then its final decode. Each
interim step advances the stream by the interval, or by the step's own time when longer (a stream's next
step waits for its last one); the share is the replicas' busy seconds per second of stream advanced,
divided by the replicas, as admission measures it later.

A Whisper decode costs by the tokens it generates, and silence generates one token (forced past it,
Whisper loops to its token limit: 446 tokens, 12-18 s). So each window is silence forced to generate
exactly `_TOKENS_PER_S` tokens per second of window (min_new_tokens = max_new_tokens). tiny.en's
transcripts of the shared recordings' first 1.6, 3.6 and 5.6 s hold 1.4-4.4 tokens per second (LibriSpeech
the most, JFK's pauses the least); forced to 4 per second, a window costs what the real speech costs
(5.6 s: 0.88 s forced against 0.58-0.94 s real, the same session). Against the share measured from
real-time streams of the shared recordings (`bench/stream_calibration.py`, whisper-tiny.en, 2 cores shared
with other work, so every figure moves with the load): without the final decode, calibrated 0.54 against
0.57 (p90 0.68) measured from one stream and 0.50 per stream from two (load average 2.2); with it, 0.96
against 0.89 (p90 0.97) from one stream and 0.49 per stream from two (load average 4.7), and once 0.62
against 0.87 from one stream (the load rose from 1.8 to 3 between calibration and streams). Within the
machine's noise of one stream's cost, which a fresh server should not underrate; streams sharing a model
cost less each (their decodes batch and their intervals stretch), which the measured share, replacing this
one after a few seconds of streamed audio, then shows.

What it costs at start-up: one warm-up step, six windows (0.6 to 5.6 s) and a final one per worker;
whisper-tiny.en on this 2-core machine: 3.6-3.9 s (load average 2-3) to 6.7 s (load average 4.7). With
interims decoded over their own 1 s encoder margin (below) it had grown to 12-21 s, and the share to 0.90-1.03
per worker: `bench/stream_calibration.py --streams 1 --seconds 60` now gives 0.55 calibrated against 0.39
measured (p90 0.47), in 3.5 s, quiet machine.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
from pipelined.v1 import audio_pb2, speech_pb2

from ..config import InputLimits, StreamingLimits
from ..errors import InvalidInput
from ..registry import ModelInstance
from ..tasks import asr
from .decode import decode_window
from .options import StreamOptions, stream_options
from .session import FIRST_DECODE_S

log = logging.getLogger(__name__)

# Tokens a calibration window generates per second of its audio: brisk read speech (see above).
_TOKENS_PER_S = 4.0


def windows(interval_s: float, max_window_s: float) -> list[float]:
    """The window lengths one utterance of continuous speech is decoded at, in seconds (see above)."""
    out = [FIRST_DECODE_S]
    while out[-1] <= max_window_s:
        out.append(out[-1] + interval_s)
    return out


def _forced(kwargs: dict[str, Any], window_s: float) -> dict[str, Any]:
    """Whisper arguments that generate as many tokens as speech of this length would (see above)."""
    tokens = max(1, round(_TOKENS_PER_S * window_s))
    generate = {**kwargs.get("generate_kwargs", {}), "min_new_tokens": tokens, "max_new_tokens": tokens}
    return {**kwargs, "generate_kwargs": generate}


def default_options(
    instance: ModelInstance, limits: StreamingLimits, input_limits: InputLimits
) -> StreamOptions | None:
    """The options of a stream that configures nothing but its audio, or None for a model that does not
    serve live streams."""
    config = speech_pb2.StreamingRecognitionConfig(
        audio_format=audio_pb2.RawAudioFormat(
            encoding=audio_pb2.AUDIO_ENCODING_FLOAT32,
            sample_rate_hertz=instance.sampling_rate,
            channel_count=1,
        )
    )
    try:
        return stream_options(config, instance, input_limits, limits)
    except InvalidInput:
        return None


async def stream_share(instance: ModelInstance, options: StreamOptions, limits: StreamingLimits) -> float:
    """One real-time stream's share of `instance` (its replicas' time), for streams with `options`."""
    scheduler = instance.scheduler
    assert scheduler is not None
    rate = instance.sampling_rate
    whisper = asr.model_kind(instance) == asr.WHISPER
    interval = options.decode_interval_s

    # Every window is decoded as a final is: no AlignAtt stop (it reads where the attention looks, which
    # in silence is anywhere), and the finals' encoder margin, not the interims' 1 s. With 1 s, forced
    # silence ends on a timestamp pair and Whisper's seek loop generates again from there: about 15
    # `generate` calls per window of 1.6-3.6 s, 2.5-5.2 s each against 0.3-0.5 s, a calibrated share of
    # 0.92 against 0.55 (tiny.en, in process, one thread). Real interims stop early over a shorter margin
    # and cost less than this: the share errs on the safe side until measured shares replace it.

    async def step(window_s: float) -> float:
        kwargs = _forced(options.kwargs, window_s) if whisper else options.kwargs
        busy = scheduler.busy_s
        await decode_window(instance, np.zeros(int(window_s * rate), np.float32), kwargs)
        return scheduler.busy_s - busy

    started = time.monotonic()
    await step(FIRST_DECODE_S)  # the first call of a model pays one-time costs a stream never sees again
    busy_s = advanced_s = 0.0
    lengths = windows(interval, limits.max_window_s)
    for window_s in lengths:
        cost = await step(window_s)
        busy_s += cost
        advanced_s += max(interval, cost)
    # The utterance ends: its final decode hears the whole window and the padding after the speech (the
    # silence it waited for is not counted as audio: pessimistic).
    busy_s += await step(lengths[-1] + options.padding_s)
    share = busy_s / advanced_s / scheduler.replica_count
    log.info(
        "model %s: one live stream takes %.0f%% of its replicas (calibrated in %.1f s)",
        instance.name,
        100 * share,
        time.monotonic() - started,
    )
    return share
