"""One live stream: a reader task turns requests into audio and speech events, a decoder task turns open
utterances into results; both write to one outbox that the servicer sends from, in order.

Each stream has at most one decode step in flight; the next step covers all audio that arrived in the
meantime. So when the model is busy (many streams), steps grow longer instead of queueing up, and the
lag stays bounded.

Latency of finals (what a user waits for once they stop talking), measured with bench/asr_streaming.py:
- the final decode runs at a higher scheduler priority than interim re-decodes (of every stream), so it
  waits at most for the batch already running, not behind the queue;
- an interim step in flight when the utterance ends is abandoned (dropped if still queued) unless it
  already heard all the speech, in which case its hypothesis is the final one and no decode is needed;
- when a pause begins inside speech, the audio up to the pause (plus padding) is decoded at once, at
  final priority: the end of speech is only declared after `min_silence_s`, and by then this decode,
  which heard exactly what the final decode would, is done or under way;
- the first decode of an utterance comes after `FIRST_DECODE_S` of speech, not a whole interval;
- the words of that pause decode that end before the pause are final at once, whether or not speech
  resumes: they were heard whole, with silence after them (before, only a second decode agreeing, or 1 s of
  audio after them, made them final). bench/asr_streaming.py --streams 1 --minutes 2, tiny.en, two
  interleaved runs each way: final lag p50 1.264 and 1.277 -> 1.193 and 1.186 s, p95 1.773 and 1.769 ->
  1.602 and 1.611 s, streamed WER against offline 0.034 and 0.030 -> 0.027 and 0.027, the same CPU;
- a periodic re-decode waits while other work is queued for the model (see `_model_busy`);
- while the model is idle, a stream that left its interval to the server re-decodes after 0.5 s of new
  speech instead of 1 s (`streaming.idle_decode_interval_s`), at a priority below every other work, and
  admission does not count those decodes (admission.py): spare cores make results fresher, and a loaded
  server decodes as before;
- a Whisper decode of a window that will not slide starts with the window's final words forced (but the last
  two), so it generates only the words after them (tasks/whisper_prefix.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
from pipelined.v1 import speech_pb2

from ..audio import AudioLimits, StreamResampler
from ..config import StreamingLimits
from ..errors import (
    DeadlineExpired,
    FailedPrecondition,
    InvalidInput,
    ModelNotReady,
    PipelinedError,
    QueueFull,
)
from ..metrics import Metrics
from ..registry import ModelInstance
from ..tasks import whisper_alignatt, whisper_language, whisper_prefix
from . import responses
from .agreement import LocalAgreement, Word
from .buffer import RollingBuffer
from .decode import Hypothesis, decode_window, with_prefix
from .options import StreamOptions
from .outbox import Outbox
from .vad import VAD_EXECUTOR, SpeechDetector, VadEvent

log = logging.getLogger(__name__)

# How long a final decode waits before retrying when the model's queue is full.
_FULL_QUEUE_RETRY_S = 0.1
# Windows shorter than this are not worth a decode (and too short for some CTC models' convolutions).
_MIN_DECODE_S = 0.1
# Speech heard before an utterance's first (interim) decode: enough for Whisper to hear a word or two.
FIRST_DECODE_S = 0.6
# Scheduler priority of decodes whose result is (probably) final; interim re-decodes run at 0, and the
# re-decodes that only use an idle model (`idle_decode_interval_s`) below every other work.
_FINAL_PRIORITY = 1
_SPARE_PRIORITY = -1
# Right context past the AlignAtt stop that makes a word of one interim decode final (see _interim_step).
# 0.25 s instead (bench/asr_streaming.py --streams 1 --minutes 2, tiny.en, one run each): final lag p50
# 1.02 against 1.23 s, streamed WER against offline 0.054 against 0.034; a 0.5 s decode interval instead of
# 1 s: p50 1.11 s, WER 0.047, twice the CPU. Neither was worth its cost (a 0.5 s interval now runs only on
# an idle model: `idle_decode_interval_s`). Again with the forced prefix
# (--minutes 2, one run each, 0.25 against 0.5 s): 1 stream p50 1.04 against 1.27 s, WER 0.054 against 0.027;
# 4 streams p95 1.74 against 1.99 s, WER 0.062 against 0.044.
_SETTLE_AFTER_STOP_S = 0.5
# A decode forces its window's final words but the last this-many (tasks/whisper_prefix.py), so Whisper
# hears the boundary between final and new words again rather than continuing from text alone.
_UNFORCED_WORDS = 2
# Inside an utterance, a stretch this long without words in a hypothesis is speech the decoder skipped.
_MAX_WORD_GAP_S = 1.0


def _abandon(read: asyncio.Future[Any]) -> None:
    """Cancels a read nobody will await. Its outcome is still retrieved: the read may have ended in the
    meantime (the client half-closed: StopAsyncIteration) or end before the cancel lands, when the session
    was itself cancelled (the caller left) or the drain or the idle timeout won; asyncio would otherwise
    log "Task exception was never retrieved" for it."""
    read.cancel()
    read.add_done_callback(lambda f: f.cancelled() or f.exception())


class IdleGuard:
    """Reads the next request, ending the stream when none comes within the idle timeout."""

    def __init__(
        self,
        requests: AsyncIterator[speech_pb2.StreamingRecognizeRequest],
        timeout_s: float,
        draining: asyncio.Event | None = None,
    ) -> None:
        self._requests = requests.__aiter__()
        self.timeout_s = timeout_s
        self._draining = draining or asyncio.Event()
        # True once the stream stopped reading because the server drains (not because the client half-closed).
        self.drained = False

    async def next(self) -> speech_pb2.StreamingRecognizeRequest | None:
        """The next request, or None once the client half-closed or the server began to drain: either way
        the session flushes what it holds and sends its last finals."""
        if self._draining.is_set():
            self.drained = True
            return None
        read = asyncio.ensure_future(anext(self._requests))
        drain = asyncio.ensure_future(self._draining.wait())
        done: set[asyncio.Future[Any]] = set()
        try:
            done, _ = await asyncio.wait(
                {read, drain}, timeout=self.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            drain.cancel()
            if read not in done:
                _abandon(read)
        if read in done:
            try:
                return read.result()
            except StopAsyncIteration:
                return None
        if drain in done:
            self.drained = True
            return None
        raise DeadlineExpired(
            f"the stream sent nothing for {self.timeout_s:g} s (streaming.idle_timeout_s) and was closed; "
            "send audio (silence included) continuously, or half-close the stream when done"
        )


async def read_config(guard: IdleGuard) -> speech_pb2.StreamingRecognizeRequest:
    """The stream's first message, which must carry its config (returned whole: a relay forwards it)."""
    first = await guard.next()
    if first is None and guard.drained:
        raise ModelNotReady("the server is shutting down; open the stream on another instance")
    if first is None:
        raise InvalidInput("the stream ended before its first message, which must carry streaming_config")
    if first.WhichOneof("streaming_request") != "streaming_config":
        raise InvalidInput(
            "the first message of a stream must carry streaming_config; audio may only follow it"
        )
    return first


@dataclass
class Utterance:
    """A stretch of speech between silences, with its decode window (absolute samples)."""

    start: int
    speech_start: int
    window_start: int
    decoded_end: int
    end: int | None = None
    speech_end: int | None = None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    # The latest decode of the current window that may serve as the final one (a pause decode: it heard
    # every word up to `last_end`; interim re-decodes stop short of their end), reused when it already
    # heard all the speech.
    last: Hypothesis | None = None
    last_end: int = 0


_DONE = object()


class StreamSession:
    def __init__(
        self,
        instance: ModelInstance,
        options: StreamOptions,
        limits: StreamingLimits,
        audio_limits: AudioLimits,
        metrics: Metrics,
        on_audio: Callable[[float], object] | None = None,
        on_dropped: Callable[[PipelinedError], object] | None = None,
    ) -> None:
        self.instance = instance
        self.options = options
        # One language detection per stream (see `_detect_language`).
        self._language_lock = asyncio.Lock()
        self.limits = limits
        self.metrics = metrics
        # Called with the seconds of every chunk received (admission measures the model's load).
        self._on_audio = on_audio
        # Called with the status a stream is dropped with, its client not reading (see `_drop_unread`).
        self._on_dropped = on_dropped
        self.rate = instance.sampling_rate
        self.resampler = StreamResampler(options.audio_format, self.rate, audio_limits)
        self.buffer = RollingBuffer()
        self.detector: SpeechDetector | None = None
        self.utterances: deque[Utterance] = deque()
        unread = metrics.unread_responses.labels(instance.name)
        self.outbox = Outbox(limits.max_unread_responses, unread.inc)
        self.wake = asyncio.Event()
        self.eof = False
        self.final_end_s = 0.0
        self.first_audio_at: float | None = None
        # Seconds of audio received (at the model's rate), and whether the stream stopped reading at
        # streaming.max_stream_duration_s (its audio so far is transcribed, then it ends OUT_OF_RANGE).
        self.received_s = 0.0
        # Seconds the reader waited for the client's messages, and seconds spent waiting for this stream's
        # decodes: the slow-pace check holds only the first, less the second, against the client (a
        # server too busy to read, or a client waiting for results, is not a trickle).
        self.waited_s = 0.0
        self.decoding_s = 0.0
        self.duration_reached = False
        self._tasks: list[asyncio.Task[None]] = []
        self.answered = False
        # The interim decode step in flight, if any, and the sample its window ends at.
        self._interim: asyncio.Task[None] | None = None
        self._interim_end = 0
        # Whether that step decodes like a final one (a pause decode), so that its words may be final.
        self._interim_full = False
        # An interim decode that stopped short of words it had not fully heard (AlignAtt) makes its words
        # that end this long before its window's end final at once, without waiting for a second decode.
        stop_s = options.interim_kwargs.get(whisper_alignatt.KWARG)
        self._settle = None if stop_s is None else stop_s + _SETTLE_AFTER_STOP_S
        self._first = int(FIRST_DECODE_S * self.rate)
        self._pad = int(options.padding_s * self.rate)
        self._interval = int(options.decode_interval_s * self.rate)
        idle = options.idle_decode_interval_s
        self._idle_interval = None if idle is None else int(idle * self.rate)
        self._max_window = int(limits.max_window_s * self.rate)
        self._hard_window = int(limits.hard_window_s * self.rate)

    # -- the call --------------------------------------------------------------------------------------

    async def run(self, guard: IdleGuard) -> AsyncIterator[speech_pb2.StreamingRecognizeResponse]:
        loop = asyncio.get_running_loop()
        options = self.options
        self.detector = await loop.run_in_executor(
            VAD_EXECUTOR, partial(SpeechDetector, self.rate, options.threshold, options.min_silence_s)
        )
        handler = asyncio.current_task()
        assert handler is not None
        tasks = self._tasks = [
            loop.create_task(self._guarded(self._read(guard))),
            loop.create_task(self._guarded(self._decode())),
        ]
        dropper = loop.create_task(self._drop_unread(handler))
        try:
            while True:
                item = await self.outbox.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if self._interim is not None:
                tasks.append(self._interim)
            tasks.append(dropper)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.outbox.clear()
            self.utterances.clear()
            self.buffer = RollingBuffer()

    async def _drop_unread(self, handler: asyncio.Task[Any]) -> None:
        """Ends the call (cancels `handler`, the task sending this stream's responses) once the stream's
        end has waited `idle_timeout_s` behind responses its client does not read.

        A send waits while the client's HTTP/2 window is full, and the stream's status can only follow
        its responses, so a client that never reads would hold its stream slot (and the call) until its
        own deadline, for ever without one: the outbox's bound stops the stream's work (its reader and
        decoder end), this frees the rest. The client sees its deadline or its own cancel, not the
        status; the server records that status (`on_dropped`: the access log, the streams' metrics).
        """
        await self.outbox.ended.wait()
        await asyncio.sleep(self.limits.idle_timeout_s)
        end = self.outbox.end
        waited = (
            f"; its client read no response for {self.limits.idle_timeout_s:g} s more "
            "(streaming.idle_timeout_s) and the stream was dropped"
        )
        if isinstance(end, PipelinedError):
            error: PipelinedError = type(end)(f"{end}{waited}")
        elif isinstance(end, BaseException):
            error = PipelinedError(f"the stream failed ({type(end).__name__}){waited}")
        else:
            error = DeadlineExpired(f"the stream's last responses were not read{waited}")
        if self._on_dropped is not None:
            self._on_dropped(error)
        handler.cancel()

    async def _guarded(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The stream ends with this error: the other task stops too, so nothing grows meanwhile.
            self.outbox.put_control(exc)
            for task in self._tasks:
                if task is not asyncio.current_task():
                    task.cancel()

    # -- reading ---------------------------------------------------------------------------------------

    async def _read(self, guard: IdleGuard) -> None:
        limit = self.limits.max_chunk_bytes
        while True:
            asked = time.monotonic()
            request = await guard.next()
            if self.first_audio_at is not None:
                self.waited_s += time.monotonic() - asked
            if request is None:
                break
            kind = request.WhichOneof("streaming_request")
            if kind == "streaming_config":
                raise FailedPrecondition(
                    "streaming_config was already sent: only the first message may carry it"
                )
            if kind != "audio":
                raise InvalidInput("a stream message carries neither streaming_config nor audio")
            if len(request.audio) > limit:
                raise InvalidInput(
                    f"an audio message of {len(request.audio)} bytes exceeds streaming.max_chunk_bytes={limit}; "
                    "send live audio in pieces of a few seconds at most"
                )
            now = time.monotonic()
            if self.first_audio_at is None:
                self.first_audio_at = now
            samples = self.resampler.push(request.audio)
            self.received_s += len(samples) / self.rate
            if self._on_audio is not None:
                self._on_audio(len(samples) / self.rate)
            self._check_pace(now)
            await self._ingest(samples, now)
            duration = self.limits.max_stream_duration_s
            if duration is not None and self.received_s >= duration:
                self.duration_reached = True
                break
        await self._ingest(self.resampler.flush(), time.monotonic())
        assert self.detector is not None
        self._on_events(self.detector.flush(self.buffer.end))
        self.eof = True
        self.wake.set()

    def _check_pace(self, now: float) -> None:
        """Audio sustained faster than `max_realtime_factor` times real time (beyond a burst) is refused:
        live audio comes at its own pace, and a recording sent at full speed would make its stream's
        decodes (and every other stream's) fall behind. Recordings go to StreamingRecognizeFile.

        Audio sustained slower than `min_realtime_factor` (once `idle_timeout_s` behind) ends the stream
        too: a trickle of a few samples every few seconds passes the idle timeout but holds a stream
        slot, and a VAD state, for ever. Only the time the server waited for the client's messages
        counts, less the time spent on the stream's decodes: a server too loaded to read its streams
        (64 admitted at once on 2 cores, in bench/soak.py) must not blame their clients."""
        assert self.first_audio_at is not None
        limits = self.limits
        elapsed = now - self.first_audio_at
        allowed = limits.realtime_burst_s + limits.max_realtime_factor * elapsed
        if self.received_s > allowed:
            raise QueueFull(
                f"the stream sent {self.received_s:.1f} s of audio in {elapsed:.1f} s, "
                f"faster than streaming.max_realtime_factor={limits.max_realtime_factor:g} times real "
                f"time beyond a {limits.realtime_burst_s:g} s burst (streaming.realtime_burst_s); send live "
                "audio at its pace, and recordings to StreamingRecognizeFile"
            )
        waited = self.waited_s - self.decoding_s
        if self.received_s < limits.min_realtime_factor * waited - limits.idle_timeout_s:
            raise DeadlineExpired(
                f"the stream sent {self.received_s:.1f} s of audio in {elapsed:.1f} s (the server waited "
                f"{self.waited_s:.1f} s for it), slower than "
                f"streaming.min_realtime_factor={limits.min_realtime_factor:g} times real time by more "
                f"than streaming.idle_timeout_s={limits.idle_timeout_s:g} s, and was closed; send live "
                "audio (silence included) as it is captured"
            )

    async def _ingest(self, samples: np.ndarray, arrived: float) -> None:
        if len(samples) == 0:
            return
        assert self.detector is not None
        self.buffer.append(samples, arrived)
        events = await asyncio.get_running_loop().run_in_executor(VAD_EXECUTOR, self.detector.push, samples)
        self._on_events(events)
        self._trim()
        held_s = self.buffer.held / self.rate
        if held_s > self.limits.max_held_audio_s:
            # Audio is only trimmed once every word in it is final: the decoder has fallen this far behind.
            raise QueueFull(
                f"the stream holds {held_s:.1f} s of audio not yet transcribed "
                f"(streaming.max_held_audio_s={self.limits.max_held_audio_s:g}): the server cannot keep "
                "up with this stream; retry later or on another instance"
            )
        self.wake.set()

    def _on_events(self, events: list[VadEvent]) -> None:
        for event in events:
            if event.started:
                previous_end = self.utterances[-1].end if self.utterances else None
                start = max(event.sample - self._pad, previous_end or 0, self.buffer.start)
                self.utterances.append(Utterance(start, event.sample, start, start))
                if len(self.utterances) == 1:
                    self._announce(self.utterances[0])
                # else: announced once the utterances before it are final, so events stay in stream order
            elif self.utterances and self.utterances[-1].end is None:
                self.utterances[-1].speech_end = event.sample
                self.utterances[-1].end = event.sample + self._pad

    def _announce(self, u: Utterance) -> None:
        if self.options.events:
            self.outbox.put(
                responses.response(
                    [],
                    self._seconds(self.buffer.end),
                    self.instance.name,
                    event=speech_pb2.SPEECH_EVENT_SPEECH_STARTED,
                    event_s=self._seconds(u.speech_start),
                )
            )

    def _trim(self) -> None:
        """Drops audio no utterance can decode any more, keeping pre-roll for the next one."""
        keep = self.utterances[0].window_start if self.utterances else self.buffer.end - self._pad
        self.buffer.trim(keep)

    # -- decoding --------------------------------------------------------------------------------------

    async def _decode(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            if self._interim is not None and self._interim.done():
                self._interim.result()  # raises what the step raised
                self._interim = None
            while self.utterances and self.utterances[0].end is not None:
                await self._final_step(self.utterances[0])
            if self.utterances and self._interim is None:
                self._start_interim(self.utterances[0])
            if self.eof and not self.utterances:
                self.outbox.put_control(_DONE)
                return

    def _start_interim(self, u: Utterance) -> None:
        available = self.buffer.end
        pause = self.detector.pause_from if self.detector is not None else None
        if pause is not None and pause > u.speech_start and not self._covers(self._full_end(u), pause):
            # A pause began: decode what the final decode would, if speech does not resume (see top).
            if available < pause + self._pad:
                return
            end, priority = pause + self._pad, _FINAL_PRIORITY
        elif u.decoded_end <= u.speech_start:
            if available - u.speech_start < self._first:
                return
            end, priority = available, 0
        elif available - u.window_start > self._hard_window or (
            available - u.decoded_end >= self._interval and not self._model_busy()
        ):
            end, priority = available, 0
        elif (
            self._idle_interval is not None
            and available - u.decoded_end >= self._idle_interval
            and self._model_idle()
        ):
            end, priority = available, _SPARE_PRIORITY
        else:
            return
        self._interim_end = min(end, u.window_start + self._hard_window)
        self._interim_full = priority >= _FINAL_PRIORITY
        self._interim = asyncio.get_running_loop().create_task(
            self._interim_step(u, self._interim_end, priority)
        )
        self._interim.add_done_callback(lambda _task: self.wake.set())

    def _model_busy(self) -> bool:
        """Work is already waiting for the model: every worker is busy, so a re-decode now would only queue.

        Waiting instead (the check is repeated at every chunk) stretches each stream's interval under
        load, keeps batches (which a final decode may wait for) small, and leaves the queue to finals.
        """
        assert self.instance.scheduler is not None
        return self.instance.scheduler.depth > 0

    def _model_idle(self) -> bool:
        """A replica is free and nothing waits: a spare re-decode starts now and delays nobody's work but
        what arrives while it runs (which then waits for one decode, as behind any running step)."""
        assert self.instance.scheduler is not None
        return self.instance.scheduler.idle

    @staticmethod
    def _full_end(u: Utterance) -> int:
        """Where the latest decode that may serve as the final one ended (-1: none since the window moved)."""
        return u.last_end if u.last is not None else -1

    def _covers(self, decoded_end: int, speech_end: int) -> bool:
        """Whether a decode up to `decoded_end` heard all speech ending at `speech_end`, and some silence."""
        return decoded_end >= speech_end + self._pad // 2

    def _heard(self, decoded_end: int, u: Utterance) -> bool:
        """Whether a decode up to `decoded_end` heard all of the ended utterance `u`."""
        assert u.end is not None
        end = min(u.end, self.buffer.end)
        speech_end = u.speech_end if u.speech_end is not None else end
        return decoded_end >= end or self._covers(decoded_end, speech_end)

    async def _final_hypothesis(self, u: Utterance, end: int) -> Hypothesis:
        """Decodes the ended utterance at final priority, beside the interim step still in flight, if any.

        The interim step is not awaited first: queued, it would delay the final; running (on another
        replica, or on the only one), its result still comes before the final's and is sent as usual.
        Whichever way, the final decode starts now. An interim step still unfinished once the final
        hypothesis is in is abandoned (dropped by the scheduler if queued; a running one finishes unheard).
        """
        interim, self._interim = self._interim, None
        if interim is None:
            return await self._hypothesis(u, end, _FINAL_PRIORITY)
        window = u.window_start
        final = asyncio.get_running_loop().create_task(self._hypothesis(u, end, _FINAL_PRIORITY))
        try:
            await asyncio.wait({interim, final}, return_when=asyncio.FIRST_COMPLETED)
            if interim.done():
                interim.result()  # raises what the step raised
                if u.window_start != window:  # it cut the window (hard limit): decode the rest again
                    final.cancel()
                    return await self._hypothesis(u, end, _FINAL_PRIORITY)
            return await final
        finally:
            for task in (interim, final):
                task.cancel()  # no-op once done

    async def _interim_step(self, u: Utterance, end: int, priority: int) -> None:
        full = priority >= _FINAL_PRIORITY
        try:
            hyp = await self._hypothesis(u, end, priority, interim=not full)
        except QueueFull:
            u.decoded_end = end  # the model is saturated: skip this interim, try again with more audio
            return
        u.decoded_end = end
        if full:
            u.last, u.last_end = hyp, end

        tail: list[Word] = []
        if end - u.window_start >= self._hard_window:
            final = self._force(u, hyp, end)
        else:
            # A pause decode heard every word before the pause, and silence after them: those words are
            # final now (see the module docstring). An interim's words need `_settle` of audio after them.
            if full:
                settled: float | None = self._seconds(end - self._pad)
            else:
                settled = None if self._settle is None else self._seconds(end) - self._settle
            final, tail = u.agreement.update(hyp.words, settled)
            self._slide(u, hyp)
        self._send(final, tail, end)

    async def _final_step(self, u: Utterance) -> None:
        assert u.end is not None
        end = min(u.end, self.buffer.end)
        speech_end = u.speech_end if u.speech_end is not None else end
        interim = self._interim
        if interim is not None and (
            interim.done()
            or end - u.window_start > self._hard_window
            or (self._interim_full and self._heard(self._interim_end, u))
        ):
            # Done, or its hypothesis may serve as the final one: wait for it (raises what it raised).
            await interim
            self._interim = interim = None
        while end - u.window_start > self._hard_window:
            cut_end = u.window_start + self._hard_window
            hyp = await self._hypothesis(u, cut_end, _FINAL_PRIORITY)
            self._send(self._force(u, hyp, cut_end), [], cut_end)
        if u.last is not None and self._heard(u.last_end, u):
            # That decode heard the whole utterance and some silence after it: no need for another.
            hyp = u.last
        else:
            hyp = await self._final_hypothesis(u, end)
        final = u.agreement.finish(hyp.words)

        event = (
            speech_pb2.SPEECH_EVENT_SPEECH_ENDED
            if self.options.events
            else speech_pb2.SPEECH_EVENT_UNSPECIFIED
        )
        self._send(final, [], end, event=event, event_s=self._seconds(speech_end), always=bool(event))
        self.metrics.final_lag.labels(self.instance.name).observe(
            time.monotonic() - self.buffer.arrival_of(speech_end)
        )
        self.utterances.popleft()
        if self.utterances:
            self._announce(self.utterances[0])
        self._trim()

    async def _hypothesis(
        self, u: Utterance, end: int, priority: int = 0, interim: bool = False
    ) -> Hypothesis:
        """The window's words up to `end`; an interim decode's stop short of words it may not have fully
        heard (see StreamOptions.interim_kwargs)."""
        samples = self.buffer.slice(u.window_start, end)
        duration = len(samples) / self.rate
        if duration < _MIN_DECODE_S:
            return Hypothesis([], [])
        if self.options.detect_language and duration >= whisper_language.DETECT_AFTER_S:
            await self._detect_language(samples)
        kwargs = self.options.interim_kwargs if interim else self.options.kwargs
        # Only windows that will not slide are forced: a forced decode has no timestamp tokens, and its
        # alignment put some word ends late; a window cut there started inside the next word, which
        # Whisper then skipped ("from | wood blocks" -> "blocks": 5 words lost in 2 minutes of speech).
        forced = (
            list(u.agreement.committed[:-_UNFORCED_WORDS])
            if self.options.force_prefix and end - u.window_start <= self._max_window
            else []
        )
        kwargs = self.options.capped(kwargs, duration, len(forced))
        if forced:
            kwargs = {**kwargs, whisper_prefix.KWARG: " ".join(w.text for w in forced)}
        started = time.monotonic()
        try:
            while True:
                try:
                    output = await decode_window(self.instance, samples, kwargs, priority)
                    break
                except QueueFull:
                    if priority < _FINAL_PRIORITY:
                        raise
                    # A busy model must not cost the stream an utterance: wait for room and try again.
                    await asyncio.sleep(_FULL_QUEUE_RETRY_S)
        finally:
            # Concurrent steps (an interim beside a final) both count: generous to the client.
            self.decoding_s += time.monotonic() - started
        self.metrics.real_time_factor.labels(self.instance.name).observe(
            (time.monotonic() - started) / duration
        )
        return with_prefix(forced, output, self._seconds(u.window_start), duration)

    async def _detect_language(self, samples: np.ndarray) -> None:
        """Detects the stream's language once and gives it to every later decode (tasks/whisper_language.py).
        A full queue leaves it for a later decode; a detection that fails leaves every decode to detect its
        own, as without this step."""
        async with self._language_lock:  # an interim and a final decode may both get here
            if not self.options.detect_language:
                return
            assert self.instance.scheduler is not None
            try:
                language = await self.instance.scheduler.submit_call(
                    partial(whisper_language.detect, samples=samples)
                )
            except QueueFull:
                return
            except Exception:
                log.warning("stream of %s: language detection failed", self.instance.name, exc_info=True)
                self.options = replace(self.options, detect_language=False)
                return
            self.options = self.options.with_language(language)

    def _slide(self, u: Utterance, hyp: Hypothesis) -> None:
        """A long window moves its start to the latest cut before which every word is final."""
        if u.decoded_end - u.window_start <= self._max_window:
            return
        done = u.agreement.after_committed(hyp.words)
        limit = self._safe_cut_limit(u, hyp.words, done)
        cuts = [t for k, t in hyp.cuts if 0 < k <= done]
        if not cuts:
            return
        # Times of one word differ a little between decodes: starting the window a bit early only
        # re-hears the end of a final word (aligned away), starting it late would lose speech.
        start = int(min(cuts[-1], limit) * self.rate)
        if start > u.window_start:
            self._move_window(u, start)

    def _safe_cut_limit(self, u: Utterance, words: list[Word], done: int) -> float:
        """The latest time a window may start at without dropping speech no final result holds yet.

        Never past the end of the last committed word, nor past the start of the first word still
        uncommitted, nor past a gap in the hypothesis: inside an utterance (no pause the detector
        accepted) a stretch with no words is speech the decoder skipped, and it must stay in the window.
        """
        if not u.agreement.committed or done == 0:
            return float("-inf")
        limit = u.agreement.committed[-1].end
        if done < len(words):
            limit = min(limit, words[done].start)
        gap = max(_MAX_WORD_GAP_S, self.options.min_silence_s + 2 * self.options.padding_s)
        previous = self._seconds(u.window_start)
        for w in words[:done]:
            if w.start - previous > gap:
                return min(limit, previous)
            previous = w.end
        return limit

    def _force(self, u: Utterance, hyp: Hypothesis, end: int) -> list[Word]:
        """A window at the hard limit: its words up to the last cut become final, however unstable."""
        cuts = [(k, t) for k, t in hyp.cuts if k > 0 and int(t * self.rate) > u.window_start]
        if cuts and int(cuts[-1][1] * self.rate) < end:
            upto, at = cuts[-1][0], int(cuts[-1][1] * self.rate)
        else:
            upto, at = len(hyp.words), end
        final = u.agreement.force(hyp.words, upto)

        self._move_window(u, at)
        return final

    def _move_window(self, u: Utterance, start: int) -> None:
        u.window_start, u.last, u.last_end = min(start, self.buffer.end), None, 0
        u.agreement.keep_after(self._seconds(u.window_start))
        self._trim()

    # -- responses -------------------------------------------------------------------------------------

    def _send(
        self,
        final: list[Word],
        tail: list[Word],
        end: int,
        event: int = speech_pb2.SPEECH_EVENT_UNSPECIFIED,
        event_s: float | None = None,
        always: bool = False,
    ) -> None:
        end_s = self._seconds(end)
        options = self.options
        results = []
        if final:
            final = self._clamp(final, end_s)
            self.final_end_s = final[-1].end
            results.append(responses.result(final, True, options.word_times, options.language))
        if tail and options.interim_results:
            results.append(
                responses.result(self._clamp(tail, end_s), False, options.word_times, options.language, end_s)
            )
        if not results and not always:
            return
        now = time.monotonic()
        if results and not self.answered and self.first_audio_at is not None:
            self.answered = True
            self.metrics.time_to_first_result.labels(self.instance.name).observe(now - self.first_audio_at)
        latency = now - self.buffer.arrival_of(end)
        self.outbox.put(
            responses.response(results, end_s, self.instance.name, latency, event=event, event_s=event_s)
        )

    def _clamp(self, words: list[Word], end_s: float) -> list[Word]:
        """Times that never go back before the last final, nor past the decoded audio."""
        out = []
        floor = self.final_end_s
        for w in words:
            start = min(max(w.start, floor), end_s)
            stop = min(max(w.end, start), end_s)
            out.append(Word(w.text, start, stop))
            floor = stop
        return out

    def _seconds(self, sample: int) -> float:
        return sample / self.rate
