"""Streamed generation (text-generation, image-text-to-text): one prompt runs alone on the model's worker
thread (scheduler.submit_call) with a streamer that hands each finished piece of text to the event loop as
it is decoded. The streamer and the stopping criterion are built on that thread, from the replica that
runs the job.

The pieces are what transformers' TextStreamer prints (whole words where the tokenizer allows); joined
they equal the unary call's new text for the same options. When the caller goes away, a stopping
criterion ends the generation at the next token, so the worker is free for the next request.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..registry import ModelInstance
from .text_generation import run_alone
from .worker_stream import Emit, stream_from_worker


def _streamer(tokenizer: Any, emit: Emit) -> Any:
    from transformers import TextStreamer

    class QueueStreamer(TextStreamer):
        """A TextStreamer whose pieces go to the caller instead of stdout."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                emit(text)

    # Same decoding as the pipeline's postprocess: special tokens skipped.
    return QueueStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


def _stop_when(event: threading.Event) -> Any:
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopWhenSet(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full(
                (input_ids.shape[0],), event.is_set(), dtype=torch.bool, device=input_ids.device
            )

    return StoppingCriteriaList([StopWhenSet()])


# generate(pipe, extra): one generation on the worker thread with this replica `pipe`; `extra` (a
# streamer and stopping criteria) goes to generate().
Generate = Callable[[Any, dict[str, Any]], Any]


def stream_pieces(
    instance: ModelInstance, generate: Generate, tokenizer_of: Callable[[Any], Any], timeout: float | None
) -> AsyncIterator[str]:
    """Yields new text as `generate` produces it, alone on a worker (streamer and stopping criteria built
    there, for the replica that runs it); raises what the generation raised. Leaving early stops the
    generation at its next token."""

    def work(pipe: Any, emit: Emit, stop: threading.Event) -> None:
        extra = {"streamer": _streamer(tokenizer_of(pipe), emit), "stopping_criteria": _stop_when(stop)}
        generate(pipe, extra)

    return stream_from_worker(instance, work, timeout)


def stream_generation(
    instance: ModelInstance,
    prompt: str | list[dict[str, str]],
    kwargs: dict[str, Any],
    seed: int | None,
    timeout: float | None,
) -> AsyncIterator[str]:
    """text-generation: yields the new text of one prompt as it is generated."""
    kwargs = {k: v for k, v in kwargs.items() if k not in ("return_full_text", "num_return_sequences")}
    return stream_pieces(
        instance,
        lambda pipe, extra: run_alone(pipe, prompt, kwargs, seed, **extra),
        lambda pipe: pipe.tokenizer,
        timeout,
    )
