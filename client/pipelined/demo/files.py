"""File transcription: an uploaded or recorded clip through `pipe.stream_file(...)`
(StreamingRecognizeFile), so a long file shows each segment as soon as its window is decoded, with the
share of the audio done; segment or word timestamps as a table and as a timeline."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..client import Client
from .errors import as_message, readable
from .models import Served, picker

TASK = "automatic-speech-recognition"
TIMESTAMPS = {"segments": True, "words": "word"}
COLUMNS = ["start (s)", "end (s)", "text"]
# Timeline tick spacing: the first that gives at most this many ticks.
MAX_TICKS = 12
_STEPS = (0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800)

Outputs = tuple[str, str, list[list[Any]], str]


def _time(value: float | None) -> str:
    return "" if value is None else f"{float(value):.2f}"


def pieces(segments: list[dict[str, Any]], level: str) -> list[dict[str, Any]]:
    """The rows to show: the segments, or their words."""
    if level == "words":
        return [w for s in segments for w in s.get("words", [])]
    return segments


def rows(items: list[dict[str, Any]]) -> list[list[Any]]:
    return [[_time(i["timestamp"][0]), _time(i["timestamp"][1]), i["text"].strip()] for i in items]


def timeline(items: list[dict[str, Any]], duration: float, level: str) -> str:
    """Each piece as a block on a time axis (two lanes for words, so neighbours stay readable)."""
    if duration <= 0:
        return ""
    step = next((s for s in _STEPS if duration / s <= MAX_TICKS), _STEPS[-1])
    ticks = "".join(
        f'<span class="tl-tick" style="left:{100 * t * step / duration:.3f}%">{t * step:g}s</span>'
        for t in range(int(duration / step) + 1)
    )
    lanes = 2 if level == "words" else 1
    blocks = []
    for n, item in enumerate(items):
        start, end = item["timestamp"]
        start = float(start or 0.0)
        end = float(end if end is not None else duration)
        left, width = 100 * start / duration, max(100 * (end - start) / duration, 0.3)
        text = html.escape(item["text"].strip())
        blocks.append(
            f'<div class="tl-block tl-lane{n % lanes}" style="left:{left:.3f}%;width:{width:.3f}%" '
            f'title="{start:.2f}–{end:.2f} s: {text}">{text}</div>'
        )
    return (
        f'<div class="tl" id="file-timeline-body" data-pieces="{len(items)}" style="height:{24 + 30 * lanes}px">'
        f'{"".join(blocks)}<div class="tl-axis">{ticks}</div></div>'
    )


def progress(done: float, duration: float, finished: bool) -> str:
    share = 100 * done / duration if duration > 0 else (100 if finished else 0)
    label = (
        f"Done: {duration:.1f} s transcribed"
        if finished
        else f"Decoded {done:.1f} s of {duration:.1f} s ({share:.0f}%)"
        if duration > 0
        else "Decoding…"
    )
    return (
        f'<div id="file-progress" data-finished="{str(finished).lower()}">'
        f'<div class="bar"><div style="width:{share:.1f}%"></div></div><span>{label}</span></div>'
    )


def transcribe(client: Client, path: str | None, model: str, level: str) -> Iterator[Outputs]:
    if not path:
        raise gr.Error("Upload or record some audio first.")
    pipe = client.pipeline(TASK, model=model)
    segments: list[dict[str, Any]] = []
    done = duration = 0.0
    yield progress(0.0, 0.0, False), "", [], ""
    try:
        for segment in pipe.stream_file(path, return_timestamps=TIMESTAMPS[level]):
            segments.append(segment)
            done, duration = segment["audio_processed_s"], segment["audio_duration_s"]
            items = pieces(segments, level)
            text = "".join(s["text"] for s in segments).strip()
            yield progress(done, duration, False), text, rows(items), timeline(items, duration, level)
    except Exception as error:
        # The segments decoded so far stay on the page, with the reason it stopped where the progress was.
        message = as_message(error)
        items = pieces(segments, level)
        text = "".join(s["text"] for s in segments).strip()
        stopped = f'<div id="file-progress" data-finished="error"><span>Stopped: {html.escape(message.message)}</span></div>'
        yield stopped, text, rows(items), timeline(items, duration, level)
        raise message from None
    items = pieces(segments, level)
    text = "".join(s["text"] for s in segments).strip()
    yield progress(duration, duration, True), text, rows(items), timeline(items, duration, level)


def tab(client: Client, served: Served) -> None:
    gr.Markdown(
        "Upload a recording (WAV, FLAC, MP3, OGG, ...; the server decodes it) or record one. Long files are "
        "transcribed window by window: each segment appears as soon as it is decoded."
    )
    with gr.Row():
        with gr.Column(scale=1):
            audio = gr.Audio(
                sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="file-audio"
            )
            model = picker(served, TASK)
            level = gr.Radio(list(TIMESTAMPS), value="segments", label="Timestamps", elem_id="file-level")
            run = gr.Button("Transcribe", variant="primary", elem_id="file-run")
        with gr.Column(scale=2):
            status = gr.HTML(elem_id="file-progress-box")
            text = gr.Textbox(label="Transcript", lines=3, interactive=False, elem_id="file-text")
            timeline_html = gr.HTML(label="Timeline", elem_id="file-timeline")
            table = gr.Dataframe(headers=COLUMNS, interactive=False, wrap=True, elem_id="file-table")

    @readable
    def on_run(path: str | None, name: str, timestamps: str) -> Iterator[Outputs]:
        yield from transcribe(client, path, name, timestamps)

    run.click(on_run, inputs=[audio, model, level], outputs=[status, text, table, timeline_html])
