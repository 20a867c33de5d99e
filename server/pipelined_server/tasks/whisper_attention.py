"""Whisper's attention implementation kept after the decodes that return word timestamps.

transformers' Whisper `generate` switches the model to eager attention for a call that returns token timestamps
(it aligns words with the cross-attention weights, which only eager attention returns) by setting
`model.config._attn_implementation = "eager"`, and never switches back. So after one live stream (word times),
or the server's own start-up calibration (streaming/calibration.py decodes as a stream does), every later
decode of that model ran eager. Measured on tiny.en, one torch thread, in process: a unary clip took 2.58 s
after one word-timestamp decode against 2.06 s before; `bench/asr_unary.py` (c=1, one replica, loaded
machine) had the server's p50 at 1.53x the in-process pipeline's with the calibration and 0.93x without it.
With this module (`bench/asr_unary.py --concurrency 1 4`, two replicas, load average 1.3-1.9): c=1 p50 0.93x
the in-process pipeline's, c=4 2.01x the sequential in-process throughput (1.49x and 0.71x before, under
heavier load: load average 4-5).

`install` wraps `generate` so that the implementation the model was loaded with comes back once no decode that
needs eager attention is running: the replicas of a model share it, so such decodes on every thread are
counted, and none of them loses eager attention while it runs.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

__all__ = ["install"]


def install(model: Any) -> None:
    """Restores `model`'s attention implementation after its word-timestamp decodes (once per model)."""
    generate = model.generate
    if getattr(generate, "__pipelined_attention__", False):
        return
    config = model.model.config  # the object transformers changes
    loaded_with = config._attn_implementation
    lock = threading.Lock()
    eager_decodes = 0

    @functools.wraps(generate)
    def restoring(*args: Any, **kwargs: Any) -> Any:
        nonlocal eager_decodes
        if not kwargs.get("return_token_timestamps"):
            return generate(*args, **kwargs)
        with lock:
            eager_decodes += 1
        try:
            return generate(*args, **kwargs)
        finally:
            with lock:
                eager_decodes -= 1
                if eager_decodes == 0:
                    config._attn_implementation = loaded_with

    restoring.__pipelined_attention__ = True  # type: ignore[attr-defined]
    model.generate = restoring
