"""Streamed generation (text-generation, image-text-to-text): one prompt runs alone on the model's worker
thread (scheduler.submit_call) with a streamer that hands each finished piece of text to the event loop as
it is decoded. The streamer and the stopping criterion are built on that thread, from the replica that
runs the job.

The pieces are what transformers' TextStreamer prints (whole words where the tokenizer allows); joined
they equal the unary call's new text for the same options. When the caller goes away, a stopping
criterion ends the generation at the next token, so the worker is free for the next request.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..registry import ModelInstance
from .text_generation import run_alone

_END = object()


def _streamer(tokenizer: Any, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any]) -> Any:
    from transformers import TextStreamer

    class QueueStreamer(TextStreamer):
        """A TextStreamer whose pieces go to an asyncio queue instead of stdout."""

        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            if text:
                loop.call_soon_threadsafe(queue.put_nowait, text)

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


async def stream_pieces(
    instance: ModelInstance, generate: Generate, tokenizer_of: Callable[[Any], Any], timeout: float | None
) -> AsyncIterator[str]:
    """Yields new text as `generate` produces it, alone on a worker (streamer and stopping criteria built
    there, for the replica that runs it); raises what the generation raised. Leaving early stops the
    generation at its next token."""
    assert instance.scheduler is not None
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def run(pipe: Any) -> None:
        try:
            if stop.is_set():  # the caller left while the job was queued
                return
            extra = {
                "streamer": _streamer(tokenizer_of(pipe), loop, queue),
                "stopping_criteria": _stop_when(stop),
            }
            generate(pipe, extra)
        finally:
            loop.call_soon_threadsafe(queue.put_nowait, _END)

    job = asyncio.ensure_future(instance.scheduler.submit_call(run, timeout=timeout))
    try:
        while True:
            getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait({getter, job}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                # The job ended (or failed before it started): flush what it queued, then its outcome.
                while not queue.empty():
                    piece = queue.get_nowait()
                    if piece is not _END:
                        yield piece
                job.result()
                return
            piece = getter.result()
            if piece is _END:
                await job
                return
            yield piece
    finally:
        stop.set()
        if not job.done():
            job.cancel()


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
