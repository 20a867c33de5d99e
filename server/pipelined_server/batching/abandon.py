"""Cancellation and deadlines that reach work already running on a worker thread.

A scheduler item whose caller left (cancelled, or its deadline passed) is skipped while queued; this
module stops it once it runs. The worker thread records the items it is computing (`running`), and two
hooks installed on each pipeline replica ask `raise_if_abandoned()` as the work goes on:
- before every `pipeline.forward` call: a chunked pipeline (ASR with `chunk_length_s`, zero-shot pairs,
  question answering spans) runs one forward per chunk, so an abandoned call stops between chunks;
- at every generated token, through a stopping criterion added to `model.generate`: text generation,
  image-text-to-text and Whisper (whose long-form decoding calls generate window by window, each with the
  same criterion) stop at the next token.
Work is abandoned only when every item of the running batch is: a batchmate still waiting keeps it going.

Measured before (issue 10): a 10-minute Recognize abandoned at its 2 s deadline kept its worker for
another ~50 s, and the next 1 s request waited 51.4 s. With the hooks, the wait is at most one window (or
chunk, or token) of work.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from ..errors import Cancelled


class Abandoned(Cancelled):
    """Raised on a worker thread when nobody waits for the work it is computing."""


class Watched(Protocol):
    def abandoned(self) -> bool: ...


_local = threading.local()


@contextlib.contextmanager
def running(items: Sequence[Watched]) -> Iterator[None]:
    """Marks `items` as the work of this thread while the block runs."""
    previous = getattr(_local, "items", None)
    _local.items = items
    try:
        yield
    finally:
        _local.items = previous


def is_abandoned() -> bool:
    items: Sequence[Watched] = getattr(_local, "items", None) or ()
    return bool(items) and all(item.abandoned() for item in items)


def raise_if_abandoned() -> None:
    if is_abandoned():
        raise Abandoned("the caller left (cancelled or deadline passed) while its work was running")


def _abandon_criterion() -> Any:
    from transformers import StoppingCriteria

    class StopWhenAbandoned(StoppingCriteria):
        """Never stops a generation that someone waits for; raises at the next token otherwise (a stop
        would only end Whisper's current window, and long-form decoding would go on to the next)."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            raise_if_abandoned()
            return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)

    return StopWhenAbandoned()


def _with_criterion(generate: Any) -> Any:
    @functools.wraps(generate)
    def watched_generate(*args: Any, **kwargs: Any) -> Any:
        from transformers import StoppingCriteriaList

        raise_if_abandoned()
        criteria = StoppingCriteriaList(kwargs.get("stopping_criteria") or [])
        criteria.append(_abandon_criterion())
        kwargs["stopping_criteria"] = criteria
        return generate(*args, **kwargs)

    watched_generate.__pipelined_watched__ = True  # type: ignore[attr-defined]
    return watched_generate


def _with_check(forward: Any) -> Any:
    @functools.wraps(forward)
    def watched_forward(*args: Any, **kwargs: Any) -> Any:
        raise_if_abandoned()
        return forward(*args, **kwargs)

    watched_forward.__pipelined_watched__ = True  # type: ignore[attr-defined]
    return watched_forward


def install(pipeline: Any) -> Any:
    """Adds the hooks to one pipeline replica (and to its model's generate, shared by the replicas: the
    check reads the calling thread's items, so sharing is safe). Anything that is not a transformers
    pipeline (a test double) is returned as is."""
    forward = getattr(pipeline, "forward", None)
    if forward is None or not hasattr(pipeline, "preprocess") or not hasattr(pipeline, "postprocess"):
        return pipeline
    if not getattr(forward, "__pipelined_watched__", False):
        pipeline.forward = _with_check(forward)
    model: Any = getattr(pipeline, "model", None)
    generate = getattr(model, "generate", None)
    if generate is not None and not getattr(generate, "__pipelined_watched__", False):
        model.generate = _with_criterion(generate)
    return pipeline
