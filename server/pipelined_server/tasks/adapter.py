"""The one shape of a task adapter, in the spirit of transformers' sanitize / preprocess / postprocess.

Every unary RPC runs the same steps (services/unary.py): find the model, `arguments` (request -> the
pipeline call's arguments: cheap checks, on the event loop), `items` (request -> work items: decoding,
tokenizing, size checks; blocking, so it runs off the event loop), queue room for every item, submit and
gather them through the model's scheduler, `response` (outputs -> response proto). An adapter knows its
task's protos, its options and its batching rule; it never touches gRPC or the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ..batching import ReplicaCall
from ..config import ServerConfig
from ..registry import ModelInstance

Request = TypeVar("Request")
Response = TypeVar("Response")


@dataclass(frozen=True)
class Item:
    """One unit of work with the batching rule its adapter chose."""

    # The pipeline input.
    payload: Any = None
    # Items of equal key (and equal arguments) may share a batch; `batchable=False` runs the item alone.
    key: Hashable = None
    batchable: bool = True
    # This item's own pipeline arguments, when they differ from the request's (e.g. Whisper long-form).
    kwargs: dict[str, Any] | None = None
    # Work that is not one input through the pipeline: called alone on a worker with its replica.
    call: ReplicaCall | None = None
    # What the adapter needs back to build the response (e.g. the input's token count).
    note: Any = None


class Adapter(Generic[Request, Response]):
    """Converts one task's request and response; subclasses fill in the steps."""

    task: str
    # Whether `items` is blocking work (decoding audio or images, tokenizing), to run off the event loop. Adapters
    # whose items are only length checks of strings say False: a thread hop costs more than the checks (on the
    # peers' tiny classifier at c=32 it was a tenth of the server's busy samples).
    decodes: bool = True
    # Whether `response` is blocking work (encoding images or audio), to run off the event loop.
    encodes: bool = False

    def model_of(self, request: Request) -> str:
        """The model the request names ('' for the task's default)."""
        return str(getattr(request, "model"))  # noqa: B009 (every request proto has it, none typed alike)

    def task_of(self, request: Request) -> str:
        return self.task

    def arguments(self, request: Request, instance: ModelInstance, config: ServerConfig) -> dict[str, Any]:
        """The pipeline call's arguments; raises InvalidInput for options the task or model refuses."""
        return {}

    def items(
        self, request: Request, instance: ModelInstance, config: ServerConfig, kwargs: dict[str, Any]
    ) -> list[Item]:
        """Blocking: the request's inputs decoded and checked against the limits, one item each."""
        raise NotImplementedError

    def response(
        self,
        request: Request,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> Response:
        """The response of the outputs, one per item, in order."""
        raise NotImplementedError


class ResultPerInput(Adapter[Any, Any]):
    """A task whose request lists media inputs and whose response holds one result per input (the vision
    and audio-classification tasks): they differ in their options, how inputs become items, and how one
    output becomes a result proto."""

    def __init__(
        self,
        task: str,
        response_type: Callable[..., Any],
        options: Callable[[Any], dict[str, Any]],
        result: Callable[[Any], Any],
        encodes: bool = False,
    ) -> None:
        self.task, self.encodes = task, encodes
        self._response_type, self._options, self._result = response_type, options, result

    def arguments(self, request: Any, instance: ModelInstance, config: ServerConfig) -> dict[str, Any]:
        return self._options(request)

    def response(
        self,
        request: Any,
        instance: ModelInstance,
        kwargs: dict[str, Any],
        items: Sequence[Item],
        outputs: list[Any],
    ) -> Any:
        return self._response_type(results=[self._result(o) for o in outputs], model=instance.name)
