"""`interface(pipe)`: what `gr.Interface.from_pipeline(pipe)` builds for a transformers pipeline, built
for a remote one. Gradio's version cannot take it: it dispatches on `type(pipe).__module__` starting
with "transformers.pipelines." and on `isinstance` against transformers' classes, and reads
`pipe.model.config`, none of which a client that never imports transformers can offer. The components
per task are Gradio's; text-generation and image-text-to-text stream their tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr
import numpy as np

from . import convert
from .errors import readable

Spec = tuple[list[Any], Any, Callable[..., Any]]


def _audio() -> gr.Audio:
    return gr.Audio(type="filepath", label="Input")


def _image() -> gr.Image:
    return gr.Image(type="filepath", label="Input Image")


def _features(result: Any) -> list[list[float]]:
    array = np.asarray(result, dtype=np.float64)
    if array.ndim == 3:  # [1][tokens][dim], as the local pipeline returns one text's token vectors
        array = array[0]
    return np.atleast_2d(array).tolist()


def _labels(text: str) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()]


def _spec(pipe: Any) -> Spec:
    task = pipe.task
    if task == "automatic-speech-recognition":
        return [_audio()], gr.Textbox(label="Output"), lambda path: pipe(path)["text"]
    if task == "audio-classification":
        return [_audio()], gr.Label(label="Class"), lambda path: convert.label_scores(pipe(path))
    if task == "text-classification":
        return (
            [gr.Textbox(label="Input")],
            gr.Label(label="Classification"),
            lambda x: convert.label_scores(pipe(x, top_k=None)),
        )
    if task == "token-classification":
        return (
            [gr.Textbox(label="Input")],
            gr.HighlightedText(label="Entities"),
            lambda x: convert.entities(x, pipe(x, aggregation_strategy="simple")),
        )
    if task == "fill-mask":
        return (
            [gr.Textbox(label="Input")],
            gr.Label(label="Classification"),
            lambda x: convert.fill_mask_scores(pipe(x)),
        )
    if task == "feature-extraction":
        return [gr.Textbox(label="Input")], gr.Dataframe(label="Output"), lambda x: _features(pipe(x))
    if task == "zero-shot-classification":
        return (
            [
                gr.Textbox(label="Input"),
                gr.Textbox(label="Possible class names (comma-separated)"),
                gr.Checkbox(label="Allow multiple true classes"),
            ],
            gr.Label(label="Classification"),
            lambda x, c, m: convert.zero_shot_scores(pipe(x, candidate_labels=_labels(c), multi_label=m)),
        )
    if task == "text-generation":

        def generate(prompt: str) -> Iterator[str]:
            text = prompt
            for piece in pipe.stream(prompt):
                text += piece
                yield text

        return [gr.Textbox(label="Input")], gr.Textbox(label="Output"), generate
    if task == "image-classification":
        return [_image()], gr.Label(label="Classification"), lambda i: convert.label_scores(pipe(i))
    if task in ("object-detection", "zero-shot-object-detection"):
        detected = gr.AnnotatedImage(label="Objects Detected")
        if task == "object-detection":
            return [_image()], detected, lambda i: convert.boxes(i, pipe(i))
        return (
            [_image(), gr.Textbox(label="Labels (comma-separated)")],
            detected,
            lambda i, c: convert.boxes(i, pipe(i, candidate_labels=_labels(c))),
        )
    if task == "zero-shot-image-classification":
        return (
            [_image(), gr.Textbox(label="Labels (comma-separated)")],
            gr.Label(label="Classification"),
            lambda i, c: convert.label_scores(pipe(i, candidate_labels=_labels(c))),
        )
    if task == "image-segmentation":
        return [_image()], gr.AnnotatedImage(label="Segments"), lambda i: convert.masks(i, pipe(i))
    if task == "depth-estimation":
        return [_image()], gr.Image(label="Depth"), lambda i: convert.depth_colors(pipe(i))
    if task == "image-text-to-text":

        def answer(image: str, question: str) -> Iterator[str]:
            chat = [
                {
                    "role": "user",
                    "content": [{"type": "image", "path": image}, {"type": "text", "text": question}],
                }
            ]
            text = ""
            for piece in pipe.stream(text=chat):
                text += piece
                yield text

        return [_image(), gr.Textbox(label="Question")], gr.Textbox(label="Answer"), answer
    raise ValueError(
        f"no interface for {task!r}: build one with gr.Interface(fn=pipe, ...) (tasks covered: "
        "automatic-speech-recognition, audio-classification, text-classification, token-classification, "
        "fill-mask, feature-extraction, zero-shot-classification, text-generation, image-classification, "
        "object-detection, zero-shot-object-detection, zero-shot-image-classification, image-segmentation, "
        "depth-estimation, image-text-to-text)"
    )


def interface(pipe: Any, **kwargs: Any) -> gr.Interface:
    """`gr.Interface.from_pipeline(pipe)` for a `Client(...).pipeline(task)`."""
    inputs, outputs, fn = _spec(pipe)
    title = f"{pipe.task} ({pipe.model or 'the server default model'})"
    return gr.Interface(fn=readable(fn), inputs=inputs, outputs=outputs, **{"title": title, **kwargs})
