"""Live microphone transcription: the browser's microphone, in chunks of `CHUNK_S` that Gradio delivers
to `on_chunk`, fed to one `pipe.stream(...)` (StreamingRecognize) per recording. Interim text is
rewritten in place, finals stay, speech events are listed, and the lag is measured here.

A recording is one `LiveSession`: a bounded queue of chunks that the SDK's request iterator drains on
its own thread, and the results it has seen. Sessions are kept by the browser session's id (not in
gr.State) so that two chunk events running at once cannot start two streams.
"""

from __future__ import annotations

import contextlib
import html
import logging
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import gradio as gr
import numpy as np

from ..client import Client
from ..streaming import StreamingResult
from .errors import as_message
from .models import Served, picker

TASK = "automatic-speech-recognition"
log = logging.getLogger("pipelined.demo")
# Seconds of microphone audio per chunk the browser sends: the floor of what the lag can be.
CHUNK_S = 0.5
# Chunks waiting for the server: past this (a minute of audio) the server is not keeping up and the
# recording ends with a message rather than growing without bound.
MAX_BACKLOG_CHUNKS = int(60 / CHUNK_S)
# A browser that stopped sending (tab closed without Stop) ends its stream after this long.
IDLE_S = 10.0
# How long Stop waits for the server's last finals.
FLUSH_S = 60.0
EVENTS_SHOWN = 8
# A finished recording is forgotten this long after it ended.
FORGET_S = 600.0


def mono_int16(samples: np.ndarray) -> np.ndarray:
    """Gradio's microphone chunk (int16, frames or frames x channels) as one 16-bit channel."""
    if samples.dtype.kind == "f":  # [-1, 1]
        samples = np.clip(samples * 32768.0, -32768, 32767)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return np.asarray(samples, dtype=np.int16)


@dataclass
class Transcript:
    """What a stream has produced so far; read by the page, written by the stream's thread."""

    finals: list[StreamingResult] = field(default_factory=list)
    interim: str = ""
    events: list[str] = field(default_factory=list)
    # Seconds from a chunk's arrival here to the first result covering it.
    lags: list[float] = field(default_factory=list)
    server_latency: float | None = None
    audio_processed: float = 0.0
    interim_count: int = 0


class LiveSession:
    """One recording: its chunks go to the server on the SDK's thread, its results come back here."""

    def __init__(self, client: Client, model: str, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.model = model
        self.chunks: queue.Queue[np.ndarray | None] = queue.Queue(MAX_BACKLOG_CHUNKS)
        self.transcript = Transcript()
        self.lock = threading.Lock()
        # (seconds of audio received up to the end of this chunk, time.monotonic() of its arrival)
        self.arrivals: list[tuple[float, float]] = []
        self.audio_received = 0.0
        self.error: BaseException | None = None
        self.error_shown = False
        self.closed = False
        self.done = threading.Event()
        # Set by every result, so that a page waiting for the last finals redraws when one comes.
        self.changed = threading.Event()
        self.finished_at: float | None = None
        pipe = client.pipeline(TASK, model=model)
        self.thread = threading.Thread(target=self._run, args=(pipe,), daemon=True, name="demo-live")
        self.thread.start()

    # ---- the browser side
    def add(self, samples: np.ndarray) -> None:
        if self.closed:
            return
        audio = mono_int16(samples)
        self.audio_received += len(audio) / self.sample_rate
        with self.lock:
            self.arrivals.append((self.audio_received, time.monotonic()))
        try:
            self.chunks.put_nowait(audio)
        except queue.Full:
            self.fail(RuntimeError(f"the server fell more than {MAX_BACKLOG_CHUNKS * CHUNK_S:.0f} s behind"))

    def close(self) -> None:
        """No more audio: the stream half-closes and the server sends its last finals."""
        if not self.closed:
            self.closed = True
            # A full queue means the stream already failed: its request iterator sees the error and ends.
            with contextlib.suppress(queue.Full):
                self.chunks.put_nowait(None)

    def fail(self, error: BaseException) -> None:
        self.error = self.error or error
        self.close()

    # ---- the stream's thread
    def _audio(self) -> Any:
        while True:
            try:
                chunk = self.chunks.get(timeout=IDLE_S)
            except queue.Empty:
                log.info("live stream idle for %.0f s: ending it", IDLE_S)
                return
            if chunk is None or self.error is not None:
                return
            yield chunk

    def _run(self, pipe: Any) -> None:
        try:
            for result in pipe.stream(
                self._audio(), sampling_rate=self.sample_rate, encoding="linear16", channels=1
            ):
                self._record(result)
        except Exception as error:  # shown on the page by the next chunk or by Stop
            self.fail(error)
        finally:
            self.closed = True
            self.finished_at = time.monotonic()
            self.done.set()
            self.changed.set()

    def _arrival_of(self, audio_s: float) -> float | None:
        with self.lock:
            for end, arrived in self.arrivals:
                if end >= audio_s - 1e-3:
                    return arrived
        return None

    def _record(self, result: StreamingResult) -> None:
        self.changed.set()
        t = self.transcript
        arrived = self._arrival_of(result.audio_processed)
        with self.lock:
            t.audio_processed = max(t.audio_processed, result.audio_processed)
            if result.event is not None:
                t.events.append(f"{result.event.replace('_', ' ')} at {result.event_time or 0.0:.2f} s")
                return
            if arrived is not None:
                t.lags.append(time.monotonic() - arrived)
            if result.latency is not None:
                t.server_latency = result.latency
            if result.is_final:
                t.finals.append(result)
                t.interim = ""
            else:
                t.interim = result.text
                t.interim_count += 1

    # ---- the page
    def render(self) -> tuple[str, str, str]:
        """(transcript HTML, events HTML, measurements HTML)."""
        t = self.transcript
        with self.lock:
            finals = " ".join(html.escape(r.text.strip()) for r in t.finals if r.text.strip())
            interim = html.escape(t.interim.strip())
            events = list(t.events[-EVENTS_SHOWN:])
            lags = list(t.lags)
            processed, latency, interim_count = t.audio_processed, t.server_latency, t.interim_count
            final_count = len(t.finals)
        status = "recording" if not self.closed else ("finished" if self.done.is_set() else "finishing")
        transcript = (
            f'<div class="live-transcript" data-status="{status}">'
            f'<span id="live-final">{finals}</span> <span id="live-interim">{interim}</span></div>'
        )
        listed = "".join(f"<li>{html.escape(e)}</li>" for e in events) or "<li>none yet</li>"
        events_html = f'<p class="live-heading">Speech events</p><ul id="live-events">{listed}</ul>'
        last = f"{lags[-1]:.2f} s" if lags else "–"
        median = f"{statistics.median(lags):.2f} s" if lags else "–"
        server = f"{latency:.2f} s" if latency is not None else "–"
        stats = (
            f'<div id="live-stats" data-status="{status}" data-received="{self.audio_received:.2f}" '
            f'data-finals="{final_count}" data-interims="{interim_count}">'
            f"<b>{status}</b> with <code>{html.escape(self.model)}</code> at {self.sample_rate} Hz · "
            f"audio sent {self.audio_received:.1f} s, transcribed {processed:.1f} s · "
            f"lag last {last}, median {median} (chunk arrival here → its first result; the browser adds "
            f"up to {CHUNK_S:.1f} s of chunking) · server latency {server} · "
            f"{interim_count} interim, {final_count} final</div>"
        )
        return transcript, events_html, stats


class LiveSessions:
    """The recording of each browser session. A recording starts with its first chunk and stays here,
    closed, after Stop: chunks still in flight then are dropped instead of starting a stray stream, until
    the next Record click (`start`) clears it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.sessions: dict[str, LiveSession] = {}
        self.lock = threading.Lock()

    def chunk(self, key: str, model: str, audio: tuple[int, np.ndarray]) -> LiveSession:
        rate, samples = audio
        with self.lock:
            session = self.sessions.get(key)
            if session is None:
                self._forget_finished()
                session = self.sessions[key] = LiveSession(self.client, model, int(rate))
        if int(rate) != session.sample_rate:
            session.fail(ValueError(f"the microphone changed rate ({session.sample_rate} -> {rate} Hz)"))
        session.add(samples)  # dropped once closed
        return session

    def get(self, key: str) -> LiveSession | None:
        return self.sessions.get(key)

    def start(self, key: str) -> None:
        """A new recording: the previous one, if finished, makes room (a running one stays)."""
        with self.lock:
            session = self.sessions.get(key)
            if session is not None and session.closed:
                del self.sessions[key]

    def stop(self, key: str) -> Iterator[LiveSession]:
        """Ends the recording's audio, then yields it each time a result arrives until the server has sent
        its last finals (at most FLUSH_S): a loaded server may still be working through the last seconds."""
        session = self.sessions.get(key)
        if session is None:
            return
        session.close()
        deadline = time.monotonic() + FLUSH_S
        while not session.done.is_set() and time.monotonic() < deadline:
            session.changed.wait(CHUNK_S)
            session.changed.clear()
            yield session
        yield session

    def _forget_finished(self) -> None:
        """Drops recordings finished long ago (their pages keep what they showed)."""
        now = time.monotonic()
        for key, session in list(self.sessions.items()):
            if session.finished_at is not None and now - session.finished_at > FORGET_S:
                del self.sessions[key]


def _shown(session: LiveSession | None) -> tuple[str, str, str]:
    """The page's values; a stream's error reaches the page once, as a message."""
    if session is None:
        return "", "", ""
    if session.error is not None and not session.error_shown:
        session.error_shown = True
        raise as_message(session.error)
    return session.render()


def tab(client: Client, served: Served) -> None:
    sessions = LiveSessions(client)
    gr.Markdown(
        "Speak into the microphone: grey text is the interim hypothesis, rewritten as you speak; black text "
        "is final and never changes. Speech start/end events come from the server's voice activity detector."
    )
    with gr.Row():
        model = picker(served, TASK, scale=1)
        mic = gr.Audio(
            sources=["microphone"],
            streaming=True,
            type="numpy",
            label="Microphone",
            scale=3,
            elem_id="live-mic",
        )
    transcript = gr.HTML('<div class="live-transcript"></div>', elem_id="live-transcript")
    with gr.Row():
        stats = gr.HTML(elem_id="live-stats-box")
        events = gr.HTML(elem_id="live-events-box")

    def on_chunk(
        audio: tuple[int, np.ndarray] | None, name: str, request: gr.Request
    ) -> tuple[str, str, str]:
        if audio is None:
            return _shown(sessions.get(request.session_hash or ""))
        return _shown(sessions.chunk(request.session_hash or "", name, audio))

    def on_start(request: gr.Request) -> None:
        sessions.start(request.session_hash or "")

    def on_stop(request: gr.Request) -> Iterator[tuple[str, str, str]]:
        for session in sessions.stop(request.session_hash or ""):
            yield _shown(session)

    mic.stream(
        on_chunk,
        inputs=[mic, model],
        outputs=[transcript, events, stats],
        stream_every=CHUNK_S,
        concurrency_limit=None,  # cheap: a chunk is queued, never decoded here
        show_progress="hidden",
        api_visibility="private",
    )
    mic.start_recording(on_start, concurrency_limit=None, show_progress="hidden", api_visibility="private")
    mic.stop_recording(
        on_stop,
        outputs=[transcript, events, stats],
        concurrency_limit=None,
        show_progress="hidden",
        api_visibility="private",
    )
