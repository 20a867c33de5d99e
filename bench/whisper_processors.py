"""Whisper's suppress-token processors with their mask made once per generate call (tasks/whisper_processors.py)
against transformers' own, which rebuild it at every step.

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/whisper_processors.py [--model whisper-tiny.en]

Prints two tables (one torch thread, all in one run):
- per decoding step: median time of each processor, transformers' and the cached one, on random scores over
  the model's vocabulary with its own suppressed tokens, for 1 and 4 rows;
- per decode: stream-like windows (the first 0.6, 1.3, ... s, up to 8 s, of each shared transcribed clip,
  decoded with word timestamps and an 8 s encoder margin, as live streams do), each decoded with and without
  the cached processors one after the other: median decode time, and how many texts differ (must be 0).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from paths import SHARED_DATA, TRANSCRIBED_CLIPS  # noqa: E402


def median_us(fn: Callable[[], Any], repeat: int = 300) -> float:
    for _ in range(10):
        fn()
    spent = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny.en")
    args = ap.parse_args()
    from pipelined_server.audio import decode_encoded
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import load_pipeline, run_batch
    from pipelined_server.sources.embedded import materialize
    from pipelined_server.tasks import whisper_context, whisper_processors
    from transformers.generation.logits_process import (
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    torch.set_num_threads(1)
    pipe = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize(args.model)))
    ).pipeline
    model = pipe.model
    config = model.generation_config
    vocab = model.config.vocab_size

    rows = []
    for batch in (1, 4):
        scores = torch.randn(batch, vocab)
        at_begin, after = torch.zeros(batch, 3, dtype=torch.long), torch.zeros(batch, 10, dtype=torch.long)
        made: list[Any] = [
            SuppressTokensLogitsProcessor(config.suppress_tokens),
            SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin_index=3),
        ]
        for original in made:
            fast = type(original).__new__(whisper_processors._CACHED[type(original)])
            fast.__dict__.update(original.__dict__)
            for step, ids in (("begin step", at_begin), ("later step", after)):
                if isinstance(original, SuppressTokensLogitsProcessor) and step == "begin step":
                    continue  # the same at every step
                name = type(original).__name__.removesuffix("LogitsProcessor")
                label = name if isinstance(original, SuppressTokensLogitsProcessor) else f"{name}, {step}"
                rows.append(
                    [
                        label,
                        batch,
                        f"{median_us(lambda p=original, i=ids, s=scores: p(i, s)):.0f}",
                        f"{median_us(lambda p=fast, i=ids, s=scores: p(i, s)):.0f}",
                    ]
                )
    print(f"{args.model}: {len(config.suppress_tokens)} suppressed tokens over a vocabulary of {vocab}")
    print(table(["processor", "rows", "transformers us", "cached us"], rows))

    clips = [decode_encoded((SHARED_DATA / c).read_bytes(), 16000) for c in TRANSCRIBED_CLIPS]
    windows = [
        clip[: int(length * 16000)]
        for clip in clips
        for length in np.arange(0.6, min(len(clip) / 16000, 8.0) + 0.01, 0.7)
    ]
    kwargs = {"return_timestamps": "word", whisper_context.KWARG: 8.0}
    installed = model._retrieve_logit_processors
    times: dict[str, list[float]] = {"transformers": [], "cached": []}
    differ = 0
    for window in windows:
        texts = {}
        for name in ("transformers", "cached"):
            if name == "cached":
                model._retrieve_logit_processors = installed
            else:
                del model._retrieve_logit_processors  # the class's own
            started = time.perf_counter()
            texts[name] = run_batch(pipe, [window], dict(kwargs))[0]["text"]
            times[name].append(time.perf_counter() - started)
        differ += texts["transformers"] != texts["cached"]
    print(
        table(
            ["processors", "windows", "decode p50 ms", "decode mean ms", "texts differing"],
            [
                [
                    name,
                    len(spent),
                    f"{statistics.median(spent) * 1000:.0f}",
                    f"{statistics.mean(spent) * 1000:.0f}",
                    differ,
                ]
                for name, spent in times.items()
            ],
        )
    )


if __name__ == "__main__":
    main()
