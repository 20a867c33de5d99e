"""Chat with a text-generation model: the conversation goes to `pipe.stream(chat)` (StreamGenerateText) and
the reply grows token by token; Stop cancels the call (the server stops generating)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..client import Client
from .errors import readable
from .models import Served, picker

TASK = "text-generation"


def text_of(content: Any) -> str:
    """A Chatbot message's content (a string, or Gradio's list of parts) as text."""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text", ""))
    if isinstance(content, list | tuple):
        return "".join(text_of(part) for part in content)
    return str(content)


def reply(
    client: Client,
    message: str,
    history: list[dict[str, Any]],
    name: str,
    max_new_tokens: int,
    temperature: float,
) -> Iterator[tuple[str, list[dict[str, Any]], str]]:
    if not message.strip():
        raise gr.Error("Type a message first.")
    chat = [{"role": m["role"], "content": text_of(m["content"])} for m in history]
    chat.append({"role": "user", "content": message})
    shown = [*chat, {"role": "assistant", "content": ""}]
    yield "", shown, "waiting for the first token…"
    options: dict[str, Any] = {"max_new_tokens": int(max_new_tokens)}
    if temperature > 0:
        options.update(do_sample=True, temperature=float(temperature))
    started = time.monotonic()
    first: float | None = None
    pieces = 0
    for piece in client.pipeline(TASK, model=name).stream(chat, **options):
        first = first if first is not None else time.monotonic() - started
        pieces += 1
        shown[-1] = {"role": "assistant", "content": shown[-1]["content"] + piece}
        yield "", shown, f"streaming: {pieces} pieces, first after {first:.2f} s"
    elapsed = time.monotonic() - started
    first_s = f"{first:.2f} s" if first is not None else "–"
    yield "", shown, f'<span id="chat-done">{pieces} pieces in {elapsed:.2f} s (first after {first_s})</span>'


def tab(client: Client, served: Served) -> None:
    with gr.Row():
        model = picker(served, TASK, scale=2)
        max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens", scale=2)
        temperature = gr.Slider(0.0, 1.5, value=0.0, step=0.05, label="Temperature (0: greedy)", scale=2)
    chatbot = gr.Chatbot(label="Chat", height=360, elem_id="chat-box")
    with gr.Row():
        message = gr.Textbox(
            placeholder="Ask something, then press Enter", show_label=False, scale=6, elem_id="chat-input"
        )
        send = gr.Button("Send", variant="primary", scale=1, elem_id="chat-send")
        stop = gr.Button("Stop", scale=1)
        clear = gr.Button("Clear", scale=1)
    status = gr.HTML(elem_id="chat-status")

    @readable
    def on_send(
        text: str, history: list[dict[str, Any]], name: str, tokens: int, temp: float
    ) -> Iterator[tuple[str, list[dict[str, Any]], str]]:
        yield from reply(client, text, history or [], name, tokens, temp)

    inputs = [message, chatbot, model, max_new_tokens, temperature]
    outputs = [message, chatbot, status]
    sent = send.click(on_send, inputs=inputs, outputs=outputs)
    submitted = message.submit(on_send, inputs=inputs, outputs=outputs)
    stop.click(None, cancels=[sent, submitted])
    clear.click(lambda: ([], ""), outputs=[chatbot, status], api_visibility="private")
