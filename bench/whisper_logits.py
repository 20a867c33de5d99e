"""Whisper's vocabulary projection in float32 against int8 with float32 rescoring (tasks/whisper_logits.py).

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/whisper_logits.py [--model whisper-tiny.en]
                                                                              [--passes 2]

Decodes the shared transcribed clips three ways, as the server does (word timestamps, one torch thread):
stream-like windows (the first 0.6, 1.3, ... s of each clip, up to 8 s) as interim decodes (1 s encoder
margin, 0.5 s AlignAtt stop) and as final decodes (8 s margin), and each whole clip with segment timestamps.
Each pass runs every input with the float32 projection, then with the rescored one. Prints per kind: inputs,
the decode time (median over inputs, best pass), and how many outputs (text and every timestamp) are equal;
then one decoding step's projection alone.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from common import clips, table


def _median_ms(fn: Any, repeats: int) -> float:
    spent = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="whisper-tiny.en")
    ap.add_argument("--passes", type=int, default=2)
    args = ap.parse_args()
    from pipelined_server.audio import decode_encoded
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import load_pipeline, run_batch
    from pipelined_server.sources.embedded import materialize
    from pipelined_server.tasks import whisper_alignatt, whisper_context, whisper_logits

    torch.set_num_threads(1)
    spec = ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize(args.model)))
    pipe = load_pipeline(spec).pipeline
    model = pipe.model
    if not whisper_logits.installed(model):
        raise SystemExit(
            f"{args.model}: the rescored projection does not apply (see tasks/whisper_logits.py)"
        )
    rescored = model.proj_out
    exact = torch.nn.Linear(rescored.in_features, rescored.out_features, bias=False)
    exact.weight = rescored.weight
    audio = [decode_encoded(path.read_bytes(), 16000) for path in clips()]
    windows = [
        clip[: int(length * 16000)]
        for clip in audio
        for length in np.arange(0.6, min(len(clip) / 16000, 8.0) + 0.01, 0.7)
    ]
    word = {"return_timestamps": "word"}
    kinds = {
        "interim windows": (windows, {**word, whisper_context.KWARG: 1.0, whisper_alignatt.KWARG: 0.5}),
        "final windows": (windows, {**word, whisper_context.KWARG: 8.0}),
        "whole clips": (audio, {"return_timestamps": True}),
    }
    rows = []
    for kind, (inputs, kwargs) in kinds.items():
        best: dict[str, float] = {}
        outputs: dict[str, list[Any]] = {}
        for _ in range(args.passes):
            for name, projection in (("float32", exact), ("rescored", rescored)):
                model.proj_out = projection
                spent = []
                outputs[name] = []
                for item in inputs:
                    started = time.perf_counter()
                    outputs[name].append(run_batch(pipe, [item], kwargs)[0])
                    spent.append(time.perf_counter() - started)
                best[name] = min(best.get(name, float("inf")), statistics.median(spent))
        equal = sum(a == b for a, b in zip(outputs["float32"], outputs["rescored"], strict=True))
        rows.append(
            [
                kind,
                len(inputs),
                f"{best['float32'] * 1000:.0f}",
                f"{best['rescored'] * 1000:.0f}",
                f"{best['rescored'] / best['float32']:.2f}",
                f"{equal} / {len(inputs)}",
            ]
        )
    model.proj_out = rescored
    head = ["decodes", "inputs", "float32 p50 ms", "rescored p50 ms", "ratio", "outputs equal"]
    print(table(head, rows))
    hidden = torch.randn(1, 1, rescored.in_features)
    with torch.inference_mode():
        step = [
            ["float32", f"{_median_ms(lambda: exact(hidden), 30):.2f}"],
            ["rescored", f"{_median_ms(lambda: rescored(hidden), 30):.2f}"],
        ]
    print(table(["one step's projection", "ms (median of 30)"], step))


if __name__ == "__main__":
    main()
