"""Image + text -> text (image-text-to-text): the image and the question as one chat turn, the answer
streamed piece by piece (StreamGenerateFromImage)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gradio as gr

from ..client import Client
from .errors import readable
from .models import Served, picker

TASK = "image-text-to-text"
TASKS = (TASK,)


def answer(client: Client, image: Any, question: str, name: str, max_new_tokens: int) -> Iterator[str]:
    if image is None:
        raise gr.Error("Upload an image first.")
    if not question.strip():
        raise gr.Error("Ask something about the image.")
    chat = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": question}]}
    ]
    text = ""
    yield text
    for piece in client.pipeline(TASK, model=name).stream(text=chat, max_new_tokens=int(max_new_tokens)):
        text += piece
        yield text


def tab(client: Client, served: Served) -> None:
    with gr.Row():
        with gr.Column():
            image = gr.Image(type="pil", label="Image", height=320, elem_id=f"{TASK}-image")
            question = gr.Textbox(label="Question", value="Describe this image.", elem_id=f"{TASK}-question")
            model = picker(served, TASK)
            tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")
            run = gr.Button("Ask", variant="primary", elem_id=f"{TASK}-run")
        out = gr.Textbox(label="Answer", lines=8, interactive=False, elem_id=f"{TASK}-out")

    @readable
    def on_run(picture: Any, text: str, name: str, max_new_tokens: int) -> Iterator[str]:
        yield from answer(client, picture, text, name, max_new_tokens)

    run.click(on_run, inputs=[image, question, model, tokens], outputs=out)
