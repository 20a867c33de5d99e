"""Whisper's encoder over a stream window plus a margin, against the padded 30 s window (tasks/whisper_context.py).

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/encoder_margin.py [--margins 2 5 8] [--stops 0.5]
                                                 [--stop-margin 1] [--model whisper-tiny.en]

Windows like a live stream's decodes: the first 0.6, 1.3, ... s (0.7 s apart, up to 8 s) of each shared
transcribed clip. Each window is decoded with word timestamps (as streams do) in the full 30 s window and with
each margin, and as interim decodes are (tasks/whisper_alignatt.py): `--stop-margin` with each AlignAtt stop
of `--stops`. Prints per row: windows, windows whose decode loops (over 3 words longer than the full decode),
mean WER against the full decode, words of the full decode that end 1 s or more before the window's end and
are missing (a stopped decode leaves out its last words by design: this counts the words it should have),
and median decode time (one torch thread; all in one run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from common import table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from paths import SHARED_DATA, TRANSCRIBED_CLIPS  # noqa: E402
from wer import wer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", type=float, nargs="+", default=[2.0, 5.0, 8.0])
    ap.add_argument("--stops", type=float, nargs="*", default=[0.5], help="AlignAtt stops (s)")
    ap.add_argument("--stop-margin", type=float, default=1.0, help="encoder margin of the stopped decodes")
    ap.add_argument("--model", default="whisper-tiny.en")
    args = ap.parse_args()
    from pipelined_server.audio import decode_encoded
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import load_pipeline, run_batch
    from pipelined_server.sources.embedded import materialize
    from pipelined_server.streaming.agreement import normalize
    from pipelined_server.tasks import whisper_alignatt, whisper_context

    torch.set_num_threads(1)
    pipe = load_pipeline(
        ModelSpec(name="w", task="automatic-speech-recognition", source=str(materialize(args.model)))
    ).pipeline
    clips = [decode_encoded((SHARED_DATA / c).read_bytes(), 16000) for c in TRANSCRIBED_CLIPS]
    windows = [
        clip[: int(length * 16000)]
        for clip in clips
        for length in np.arange(0.6, min(len(clip) / 16000, 8.0) + 0.01, 0.7)
    ]
    kwargs = {"return_timestamps": "word"}
    times: dict[str, list[float]] = {"full 30 s": []}
    loops: dict[str, int] = {}
    errors: dict[str, list[float]] = {}
    missed: dict[str, int] = {}
    settled = 0
    variants = {f"{m:g} s margin": {whisper_context.KWARG: m} for m in args.margins}
    for stop in args.stops:
        variants[f"{args.stop_margin:g} s margin, {stop:g} s stop"] = {
            whisper_context.KWARG: args.stop_margin,
            whisper_alignatt.KWARG: stop,
        }
    for window in windows:
        started = time.perf_counter()
        out = run_batch(pipe, [window], kwargs)[0]
        times["full 30 s"].append(time.perf_counter() - started)
        full = out["text"]
        cut_s = len(window) / 16000 - 1.0
        heard = [
            normalize(c["text"])
            for c in out["chunks"]
            if c["timestamp"][1] is not None and c["timestamp"][1] <= cut_s
        ]
        settled += len(heard)
        for name, extra in variants.items():
            started = time.perf_counter()
            result = run_batch(pipe, [window], {**kwargs, **extra})[0]
            times.setdefault(name, []).append(time.perf_counter() - started)
            text, got = result["text"], {normalize(c["text"]) for c in result["chunks"]}
            loops[name] = loops.get(name, 0) + (len(text.split()) > len(full.split()) + 3)
            errors.setdefault(name, []).append(wer(full, text) if full.strip() else 0.0)
            missed[name] = missed.get(name, 0) + sum(1 for w in heard if w not in got)
    rows = [
        [
            name,
            len(windows),
            loops.get(name, 0),
            f"{statistics.mean(errors[name]):.3f}" if name in errors else "-",
            f"{missed[name]} / {settled}" if name in missed else "-",
            f"{statistics.median(spent) * 1000:.0f}",
        ]
        for name, spent in times.items()
    ]
    head = ["encoder input", "windows", "looping decodes", "mean WER vs full", "settled words missed"]
    print(table([*head, "decode p50 ms"], rows))


if __name__ == "__main__":
    main()
