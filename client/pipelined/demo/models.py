"""What the server serves, from ListModels: the models table at the top of the page, and per task the
model choices (the task's default model first) that every tab offers."""

from __future__ import annotations

from typing import Any

import gradio as gr

from ..client import Client
from .errors import readable

COLUMNS = ["model", "task", "state", "device", "dtype", "source"]
# Up to this many models the table starts open; a longer one starts folded so the tabs stay in view.
OPEN_UP_TO = 4


class Served:
    """The server's models as ListModels reported them when the page was built."""

    def __init__(self, models: list[dict[str, Any]]) -> None:
        self.models = models

    @classmethod
    def read(cls, client: Client) -> Served:
        return cls(client.models())

    def has(self, *tasks: str) -> bool:
        return any(m["task"] in tasks for m in self.models)

    def served_tasks(self, tasks: tuple[str, ...]) -> list[str]:
        """Those of `tasks` the server serves, in the order given."""
        return [t for t in tasks if self.has(t)]

    def names(self) -> list[str]:
        return [m["name"] for m in self.models]

    def choices(self, task: str) -> list[str]:
        names = [m for m in self.models if m["task"] == task]
        return [m["name"] for m in sorted(names, key=lambda m: not m["default"])]

    def rows(self) -> list[list[str]]:
        return [
            [
                m["name"] + (" (default)" if m["default"] else ""),
                m["task"],
                m["state"] + (f": {m['error']}" if m["error"] else ""),
                m["device"],
                m["dtype"],
                m["source"],
            ]
            for m in self.models
        ]


def picker(served: Served, task: str, **kwargs: Any) -> gr.Dropdown:
    """The model to call for `task` (the server's default model first)."""
    choices = served.choices(task)
    return gr.Dropdown(
        choices=choices,
        value=choices[0] if choices else None,
        label="Model",
        interactive=len(choices) > 1,
        **kwargs,
    )


def table(served: Served, client: Client) -> None:
    """The models table, with a button that reads ListModels again (states change as models load)."""
    count = len(served.models)
    title = f"{count} model{'s' if count != 1 else ''} served by {client.target}: {', '.join(served.names())}"
    with gr.Accordion(title, open=count <= OPEN_UP_TO, elem_id="models"):
        models = gr.Dataframe(
            value=served.rows(),
            headers=COLUMNS,
            interactive=False,
            wrap=True,
            elem_id="models-table",
        )
        refresh = gr.Button("Refresh", size="sm")

    def reload() -> list[list[str]]:
        return Served.read(client).rows()

    refresh.click(readable(reload), outputs=models, api_visibility="private")
