"""The shape most task tabs share: one input, the model to call, a button, one output."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gradio as gr

from ..client import Client
from .errors import readable
from .models import Served, picker


def one_input(
    client: Client,
    served: Served,
    task: str,
    field: gr.components.Component,
    button: str,
    output: gr.components.Component,
    call: Callable[[Any, Any], Any],
) -> None:
    """`field` and `output` are built with render=False; the button runs `call(pipe, value)`."""
    with gr.Row():
        with gr.Column():
            field.render()
            model = picker(served, task)
            run = gr.Button(button, variant="primary", elem_id=f"{task}-run")
        output.render()

    @readable
    def on_run(value: Any, name: str) -> Any:
        if value is None or value == "":
            raise gr.Error("Give an input first.")
        return call(client.pipeline(task, model=name), value)

    run.click(on_run, inputs=[field, model], outputs=output)
