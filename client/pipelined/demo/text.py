"""Text tasks, one sub-tab per task the server serves: classification, entities highlighted in the text,
fill-mask, zero-shot classification, and the similarity of two sentences from their embeddings."""

from __future__ import annotations

import gradio as gr

from ..client import Client
from . import convert
from .errors import readable
from .models import Served, picker
from .panel import one_input

TASKS = (
    "text-classification",
    "token-classification",
    "fill-mask",
    "zero-shot-classification",
    "feature-extraction",
)
TITLES = {
    "text-classification": "Classification",
    "token-classification": "Entities",
    "fill-mask": "Fill the mask",
    "zero-shot-classification": "Zero-shot",
    "feature-extraction": "Similarity",
}


def _text(task: str, label: str, value: str, lines: int = 3) -> gr.Textbox:
    return gr.Textbox(label=label, value=value, lines=lines, elem_id=f"{task}-input", render=False)


def _classification(client: Client, served: Served) -> None:
    task = "text-classification"
    one_input(
        client,
        served,
        task,
        _text(task, "Text", "I love how fast this service answers!"),
        "Classify",
        gr.Label(label="Labels", elem_id=f"{task}-out", render=False),
        lambda pipe, value: convert.label_scores(pipe(value, top_k=None)),
    )


def _entities(client: Client, served: Served) -> None:
    task = "token-classification"
    one_input(
        client,
        served,
        task,
        _text(task, "Text", "My name is Sarah and I live in London."),
        "Find entities",
        gr.HighlightedText(label="Entities", combine_adjacent=True, elem_id=f"{task}-out", render=False),
        lambda pipe, value: convert.entities(value, pipe(value, aggregation_strategy="simple")),
    )


def _fill_mask(client: Client, served: Served) -> None:
    task = "fill-mask"
    one_input(
        client,
        served,
        task,
        _text(
            task,
            "Text with the model's mask token ([MASK] for BERT-like models, <mask> for RoBERTa-like)",
            "Paris is the [MASK] of France.",
            lines=2,
        ),
        "Fill",
        gr.Label(label="Candidates", elem_id=f"{task}-out", render=False),
        lambda pipe, value: convert.fill_mask_scores(pipe(value)),
    )


def _zero_shot(client: Client, served: Served) -> None:
    task = "zero-shot-classification"
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(
                label="Text", value="The new phone has a brilliant camera but the battery dies fast."
            )
            labels = gr.Textbox(
                label="Candidate labels (comma-separated)", value="technology, sports, cooking"
            )
            multi = gr.Checkbox(label="Several labels can be true")
            model = picker(served, task)
            run = gr.Button("Classify", variant="primary", elem_id=f"{task}-run")
        scores = gr.Label(label="Labels", elem_id="zero-shot-classification-out")

    @readable
    def on_run(value: str, candidates: str, multi_label: bool, name: str) -> dict[str, float]:
        names = [c.strip() for c in candidates.split(",") if c.strip()]
        if not names:
            raise gr.Error("Give at least one candidate label.")
        result = client.pipeline(task, model=name)(value, candidate_labels=names, multi_label=multi_label)
        return convert.zero_shot_scores(result)

    run.click(on_run, inputs=[text, labels, multi, model], outputs=scores)


def _similarity(client: Client, served: Served) -> None:
    task = "feature-extraction"
    with gr.Row():
        with gr.Column():
            first = gr.Textbox(label="Sentence A", value="How do I bake bread at home?")
            second = gr.Textbox(label="Sentence B", value="What is a simple recipe for homemade bread?")
            model = picker(served, task)
            run = gr.Button("Compare", variant="primary", elem_id=f"{task}-run")
        with gr.Column():
            score = gr.Number(
                label="Cosine similarity of the mean-pooled embeddings", elem_id="similarity-out"
            )
            size = gr.Markdown()

    @readable
    def on_run(a: str, b: str, name: str) -> tuple[float, str]:
        # Pooled and normalised explicitly, so any encoder gives sentence vectors (not token vectors).
        vectors = client.pipeline(task, model=name)([a, b], pooling="mean", normalize=True)
        return round(convert.cosine(vectors[0], vectors[1]), 4), f"{len(vectors[0])}-dimensional embeddings"

    run.click(on_run, inputs=[first, second, model], outputs=[score, size])


BUILDERS = {
    "text-classification": _classification,
    "token-classification": _entities,
    "fill-mask": _fill_mask,
    "zero-shot-classification": _zero_shot,
    "feature-extraction": _similarity,
}


def tab(client: Client, served: Served) -> None:
    with gr.Tabs():
        for task in served.served_tasks(TASKS):
            with gr.Tab(TITLES[task], id=task):
                BUILDERS[task](client, served)
