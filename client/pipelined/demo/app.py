"""The page: the served models on top, then one tab per task family the server serves (read once from
ListModels), and `serve` to run it."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

# Before Gradio is imported: no usage reporting from a demo that may run where nothing else is reachable.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from ..client import Client  # noqa: E402
from . import chat, files, live, multimodal, text, vision  # noqa: E402
from .models import Served, table  # noqa: E402

# (tab title, tab id, tasks that make it appear, builder)
FAMILIES: list[tuple[str, str, tuple[str, ...], Callable[[Client, Served], None]]] = [
    ("Live transcription", "live", (live.TASK,), live.tab),
    ("File transcription", "file", (files.TASK,), files.tab),
    ("Text", "text", text.TASKS, text.tab),
    ("Chat", "chat", (chat.TASK,), chat.tab),
    ("Vision", "vision", vision.TASKS, vision.tab),
    ("Image + text", "multimodal", multimodal.TASKS, multimodal.tab),
]
# System fonts: the default theme's web fonts come from a CDN the demo's users may not reach.
THEME = gr.themes.Default(
    font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
)
# The browser's voice processing (echo cancellation, noise suppression, automatic gain) is made for calls:
# it pumps levels and cuts word onsets, which costs Whisper words. Gradio asks for the microphone with the
# defaults, so the page asks for the raw signal instead.
RAW_MICROPHONE = """<script>
(() => {
  const devices = navigator.mediaDevices;
  if (!devices || !devices.getUserMedia) return;
  const original = devices.getUserMedia.bind(devices);
  devices.getUserMedia = (constraints) => {
    if (constraints && constraints.audio) {
      const audio = constraints.audio === true ? {} : { ...constraints.audio };
      Object.assign(audio, { echoCancellation: false, noiseSuppression: false, autoGainControl: false });
      constraints = { ...constraints, audio };
    }
    return original(constraints);
  };
})();
</script>"""
CSS = """
.live-transcript { font-size: 1.25em; line-height: 1.6; min-height: 3.2em; padding: 8px 12px;
  border: 1px solid #e5e5e5; border-radius: 6px; background: #fff; }
.live-heading { font-weight: 600; font-size: 0.9em; color: #444; margin: 0 0 4px; }
#live-interim { color: #888; font-style: italic; }
#live-events { margin: 0; font-size: 0.9em; color: #555; }
#live-stats { font-size: 0.9em; color: #444; }
#file-progress .bar { height: 8px; background: #eee; border-radius: 4px; overflow: hidden; margin-bottom: 4px; }
#file-progress .bar div { height: 100%; background: #f97316; transition: width 0.2s; }
.tl { position: relative; width: 100%; background: #fafafa; border: 1px solid #e5e5e5; border-radius: 4px; }
.tl-block { position: absolute; height: 24px; overflow: hidden; white-space: nowrap; font-size: 11px;
  line-height: 24px; padding: 0 2px; box-sizing: border-box; border-radius: 3px; color: #1e293b;
  background: #bfdbfe; border: 1px solid #60a5fa; }
.tl-lane0 { top: 4px; }
.tl-lane1 { top: 32px; background: #fed7aa; border-color: #fb923c; }
.tl-axis { position: absolute; left: 0; right: 0; bottom: 0; height: 16px; border-top: 1px solid #ddd; }
.tl-tick { position: absolute; font-size: 10px; color: #666; transform: translateX(-50%); }
"""


def build_app(client: Client) -> gr.Blocks:
    served = Served.read(client)
    shown_tasks: set[str] = set()
    with gr.Blocks(title="pipelined demo") as app:
        gr.Markdown(
            f"# pipelined demo\nEvery result on this page comes from the pipelined server at `{client.target}` "
            "over gRPC, through the Python SDK (`Client(...).pipeline(task)`)."
        )
        table(served, client)
        with gr.Tabs(elem_id="families"):
            for title, tab_id, tasks, build in FAMILIES:
                if served.has(*tasks):
                    shown_tasks.update(tasks)
                    with gr.Tab(title, id=tab_id, elem_id=f"tab-{tab_id}"):
                        build(client, served)
        others = sorted({m["task"] for m in served.models} - shown_tasks)
        if others:
            gr.Markdown(
                f"Also served, without a tab here: {', '.join(others)}. Call them with "
                "`client.pipeline(task)`, or get a page for one with `pipelined.demo.interface(pipe)`."
            )
    return app


def serve(client: Client, host: str = "127.0.0.1", port: int = 7860, **launch: Any) -> None:
    """Builds the page and serves it until interrupted (Ctrl-C)."""
    app = build_app(client)
    app.queue(default_concurrency_limit=8)
    _, url, _ = app.launch(
        server_name=host,
        server_port=port,
        theme=THEME,
        css=CSS,
        head=RAW_MICROPHONE,
        show_error=False,
        quiet=True,
        prevent_thread_lock=True,
        **launch,
    )
    print(f"pipelined demo: {url} (models served by {client.target}); Ctrl-C stops it", flush=True)
    app.block_thread()
