"""Vision tasks, one sub-tab per task the server serves: classification, detection with the boxes drawn on
the image, segmentation masks over the image, depth maps, and the zero-shot variants."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..client import Client
from . import convert
from .errors import readable
from .models import Served, picker
from .panel import one_input

TASKS = (
    "image-classification",
    "object-detection",
    "image-segmentation",
    "depth-estimation",
    "zero-shot-image-classification",
    "zero-shot-object-detection",
)
TITLES = {
    "image-classification": "Classification",
    "object-detection": "Detection",
    "image-segmentation": "Segmentation",
    "depth-estimation": "Depth",
    "zero-shot-image-classification": "Zero-shot classification",
    "zero-shot-object-detection": "Zero-shot detection",
}


def _image(task: str, render: bool = True) -> gr.Image:
    return gr.Image(type="pil", label="Image", elem_id=f"{task}-image", height=320, render=render)


def _needed(image: Any) -> None:
    if image is None:
        raise gr.Error("Upload an image first.")


def _labels(text: str) -> list[str]:
    names = [c.strip() for c in text.split(",") if c.strip()]
    if not names:
        raise gr.Error("Give at least one candidate label.")
    return names


def _classification(client: Client, served: Served) -> None:
    task = "image-classification"
    one_input(
        client,
        served,
        task,
        _image(task, render=False),
        "Classify",
        gr.Label(label="Labels", num_top_classes=5, elem_id=f"{task}-out", render=False),
        lambda pipe, picture: convert.label_scores(pipe(picture, top_k=5)),
    )


def _detection(client: Client, served: Served, task: str) -> None:
    zero_shot = task == "zero-shot-object-detection"
    with gr.Row():
        with gr.Column():
            image = _image(task)
            labels = gr.Textbox(
                label="What to look for (comma-separated)", value="cat, remote control", visible=zero_shot
            )
            threshold = gr.Slider(
                0.0,
                1.0,
                value=0.1 if zero_shot else 0.5,
                step=0.01,
                label="Score threshold",
                elem_id=f"{task}-threshold",
            )
            model = picker(served, task)
            run = gr.Button("Detect", variant="primary", elem_id=f"{task}-run")
        with gr.Column():
            # PNG: the boxes' colours stay exact (WebP, Gradio's default, blurs thin lines).
            drawn = gr.Image(label="Detected objects", format="png", elem_id=f"{task}-out", height=320)
            table = gr.Dataframe(
                headers=convert.DETECTION_COLUMNS, interactive=False, elem_id=f"{task}-table"
            )

    @readable
    def on_run(picture: Any, candidates: str, score: float, name: str) -> tuple[Any, list[list[Any]]]:
        _needed(picture)
        pipe = client.pipeline(task, model=name)
        if zero_shot:
            records = pipe(picture, candidate_labels=_labels(candidates), threshold=score)
        else:
            records = pipe(picture, threshold=score)
        return convert.draw_boxes(picture, records), convert.detection_rows(records)

    run.click(on_run, inputs=[image, labels, threshold, model], outputs=[drawn, table])


def _segmentation(client: Client, served: Served) -> None:
    task = "image-segmentation"
    one_input(
        client,
        served,
        task,
        _image(task, render=False),
        "Segment",
        gr.AnnotatedImage(label="Segments", elem_id=f"{task}-out", height=320, render=False),
        lambda pipe, picture: convert.masks(picture, pipe(picture)),
    )


def _depth(client: Client, served: Served) -> None:
    task = "depth-estimation"
    one_input(
        client,
        served,
        task,
        _image(task, render=False),
        "Estimate depth",
        gr.Image(
            label="Depth (brighter: larger predicted value)", elem_id=f"{task}-out", height=320, render=False
        ),
        lambda pipe, picture: convert.depth_colors(pipe(picture)),
    )


def _zero_shot_classification(client: Client, served: Served) -> None:
    task = "zero-shot-image-classification"
    with gr.Row():
        with gr.Column():
            image = _image(task)
            labels = gr.Textbox(label="Candidate labels (comma-separated)", value="a cat, a dog, a car")
            model = picker(served, task)
            run = gr.Button("Classify", variant="primary", elem_id=f"{task}-run")
        scores = gr.Label(label="Labels", elem_id=f"{task}-out")

    @readable
    def on_run(picture: Any, candidates: str, name: str) -> dict[str, float]:
        _needed(picture)
        return convert.label_scores(
            client.pipeline(task, model=name)(picture, candidate_labels=_labels(candidates))
        )

    run.click(on_run, inputs=[image, labels, model], outputs=scores)


def tab(client: Client, served: Served) -> None:
    builders = {
        "image-classification": lambda: _classification(client, served),
        "object-detection": lambda: _detection(client, served, "object-detection"),
        "image-segmentation": lambda: _segmentation(client, served),
        "depth-estimation": lambda: _depth(client, served),
        "zero-shot-image-classification": lambda: _zero_shot_classification(client, served),
        "zero-shot-object-detection": lambda: _detection(client, served, "zero-shot-object-detection"),
    }
    with gr.Tabs():
        for task in served.served_tasks(TASKS):
            with gr.Tab(TITLES[task], id=task):
                builders[task]()
