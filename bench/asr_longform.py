"""Long audio: Whisper's sequential long-form vs the pipeline's chunk stitching vs our segment stream.

    python bench/asr_longform.py [--model whisper-tiny.en] [--repeat 2]

Builds one long English recording from the human-referenced clips of ../shared/data (LJSpeech,
LibriSpeech, JFK), joined with half a second of silence and repeated, and prints each method's word
error rate against the joined references, its wall time, and (for the stream) when the first segment
arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from common import SHARED_DATA, ServerProcess, table
from wer import wer

CLIPS = [
    "audio/LJ001-0001.wav",
    "audio/LJ001-0002.wav",
    "audio/LJ001-0003.wav",
    "audio/LJ001-0004.wav",
    "audio/librispeech-1995-1837-0001.wav",
    "audio/jfk.flac",
]


def long_recording(repeat: int) -> tuple[np.ndarray, str]:
    from pipelined_server.audio import AudioLimits, decode_encoded

    manifest = {e["file"]: e for e in json.loads((SHARED_DATA / "manifest.json").read_text())}
    gap = np.zeros(8000, np.float32)
    pieces, words = [], []
    for _ in range(repeat):
        for name in CLIPS:
            pieces += [decode_encoded((SHARED_DATA / name).read_bytes(), 16000, AudioLimits()), gap]
            words.append(manifest[name]["reference"])
    return np.concatenate(pieces), " ".join(words)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from pipelined_server.config import embedded_spec
    from pipelined_server.loading import load_pipeline

    torch.set_num_threads(1)
    audio, reference = long_recording(args.repeat)
    pipe = load_pipeline(embedded_spec(args.model)).pipeline
    rows = []
    for label, kwargs in [
        ("sequential long-form (pipeline, no chunking)", {}),
        ("chunk_length_s=30 stitching", {"chunk_length_s": 30, "batch_size": 4}),
    ]:
        started = time.perf_counter()
        text = pipe(audio.copy(), return_timestamps=True, **kwargs)["text"]
        rows.append([label, 100 * wer(reference, text), time.perf_counter() - started, "-"])
    del pipe

    from pipelined import Client

    server = ServerProcess(["--model", args.model])
    try:
        server.wait_ready()
        stream = Client(server.target).pipeline("automatic-speech-recognition").stream_file
        started = time.perf_counter()
        first = None
        texts = []
        for segment in stream({"raw": audio, "sampling_rate": 16000}):
            first = first or time.perf_counter() - started
            texts.append(segment["text"])
        rows.append(
            [
                "server StreamingRecognizeFile (segments)",
                100 * wer(reference, "".join(texts)),
                time.perf_counter() - started,
                first,
            ]
        )
    finally:
        server.stop()
    print(f"model={args.model} audio={len(audio) / 16000:.1f} s, reference words={len(reference.split())}")
    print(table(["method", "WER %", "wall s", "first segment s"], rows))


if __name__ == "__main__":
    main()
