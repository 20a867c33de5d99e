"""A web demo of a pipelined server (`pipelined demo`, needs `pip install 'pipelined[demo]'`): one Gradio
app with a tab per task family the server serves, talking to it through this SDK only.

`interface(pipe)` is the remote twin of `gr.Interface.from_pipeline(pipe)`, which cannot take a remote
pipeline: Gradio picks the interface by `isinstance` checks against transformers' pipeline classes (and
reads `pipe.model.config`), so it needs the in-process pipeline objects this client never imports.

Gradio is imported when these are called, so `import pipelined.demo` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from ..client import Client


def build_app(client: Client) -> gr.Blocks:
    """The demo for everything `client`'s server serves (read once from ListModels)."""
    from .app import build_app as build

    return build(client)


def interface(pipe: Any, **kwargs: Any) -> gr.Interface:
    """`gr.Interface.from_pipeline(pipe)` for `Client(...).pipeline(task)`: the same components per task;
    `kwargs` go to `gr.Interface` (title, description, examples, ...)."""
    from .single import interface as build

    return build(pipe, **kwargs)


__all__ = ["build_app", "interface"]
