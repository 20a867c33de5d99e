"""What each weight dtype costs and changes on this CPU: load time, resident memory, latency, accuracy.

    python bench/dtypes.py [--dtypes float32 float16 bfloat16 int8] [--clips 6] [--torch-threads 1]

Each (model, dtype) loads in a fresh process, so that its resident memory is its own. Models: the embedded
Whisper tiny.en (word error rate on the shared recordings with references, and how many words differ from
float32's transcripts; latency per clip) and MiniLM-L6 (cosine similarity of its mean-pooled sentence
embeddings with float32's; latency per sentence). Latency is the median over the inputs after one
warm-up call. `dtype` is the server config's `dtype` (int8 on CPU: dynamic quantization of nn.Linear).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

from common import DEFAULT_CLIPS, REPO, clips, table

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "Stock markets fell sharply after the announcement.",
    "How do I reset my password?",
    "The cat sleeps on the warm windowsill all afternoon.",
    "Quantum computers use qubits instead of bits.",
    "She ordered a coffee and a croissant.",
    "Heavy rain is expected across the region tomorrow.",
]


def measure(model: str, dtype: str, n_clips: int, threads: int) -> dict[str, Any]:
    """Runs in the child process: one model in one dtype."""
    import numpy as np
    import torch
    from pipelined_server.audio import decode_encoded
    from pipelined_server.config import embedded_spec
    from pipelined_server.loading import load_pipeline
    from pipelined_server.memory import resident_bytes

    torch.set_num_threads(threads)

    spec = embedded_spec(model).model_copy(update={"dtype": dtype})
    from pipelined_server.loading import resolve_source

    resolve_source(spec.source)  # conversion of an embedded model is not loading: done before timing
    started = time.perf_counter()
    loaded = load_pipeline(spec)
    load_s = time.perf_counter() - started
    out: dict[str, Any] = {
        "load_s": load_s,
        "rss": resident_bytes(),
        "weights": sum(loaded.weight_bytes.values()),
    }
    pipe = loaded.pipeline
    latencies = []
    if pipe.task == "automatic-speech-recognition":
        audio = [decode_encoded(p.read_bytes(), 16000) for p in clips(DEFAULT_CLIPS[:n_clips])]
        pipe({"raw": audio[0], "sampling_rate": 16000})  # warm-up
        texts = []
        for a in audio:
            t = time.perf_counter()
            texts.append(pipe({"raw": a, "sampling_rate": 16000})["text"])
            latencies.append(time.perf_counter() - t)
        out["texts"] = texts
    else:
        pipe(SENTENCES[0])
        vectors = []
        for s in SENTENCES:
            t = time.perf_counter()
            tokens = np.asarray(pipe(s), dtype=np.float32)[0]
            latencies.append(time.perf_counter() - t)
            v = tokens.mean(axis=0)
            vectors.append((v / np.linalg.norm(v)).tolist())
        out["vectors"] = vectors
    out["latency_s"] = statistics.median(latencies)
    return out


def run_child(model: str, dtype: str, n_clips: int, threads: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", model, dtype, str(n_clips), str(threads)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16", "bfloat16", "int8"])
    parser.add_argument("--clips", type=int, default=len(DEFAULT_CLIPS))
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, dtype, n, threads = args.child
        print(json.dumps(measure(model, dtype, int(n), int(threads))))
        return
    import numpy as np
    from pipelined_server.memory import human
    from wer import wer

    dtypes = ["float32", *[d for d in args.dtypes if d != "float32"]]
    references = [_reference(c) for c in DEFAULT_CLIPS[: args.clips]]
    rows: list[list[object]] = []
    for model in ("whisper-tiny.en", "all-minilm-l6-v2"):
        base: dict[str, Any] = {}
        for dtype in dtypes:
            r = run_child(model, dtype, args.clips, args.torch_threads)
            if "error" in r:
                rows.append([model, dtype, "-", "-", "-", "-", r["error"][:60]])
                continue
            if dtype == "float32":
                base = r
            if "texts" in r:
                accuracy = f"WER {wer(' '.join(references), ' '.join(r['texts'])):.1%}"
                if base and dtype != "float32":
                    accuracy += f", {wer(' '.join(base['texts']), ' '.join(r['texts'])):.1%} words differ"
            else:
                cos = (np.asarray(r["vectors"]) * np.asarray(base["vectors"])).sum(axis=1)
                accuracy = f"cosine vs float32 mean {cos.mean():.5f} min {cos.min():.5f}"
            rows.append(
                [model, dtype, f"{r['load_s']:.1f}", human(r["weights"]), human(r["rss"]),
                 f"{r['latency_s'] * 1000:.0f}", accuracy]
            )  # fmt: skip
    print(table(["model", "dtype", "load s", "weights", "RSS after load", "latency ms", "accuracy"], rows))
    print(f"\ncommand: python bench/dtypes.py --dtypes {' '.join(dtypes)} --clips {args.clips} "
          f"--torch-threads {args.torch_threads}  (cpu: {_cpu()})")  # fmt: skip


def _reference(clip: str) -> str:
    manifest = json.loads((clips([clip])[0].parents[1] / "manifest.json").read_text())
    return str(next(e["reference"] for e in manifest if e["file"] == clip))


def _cpu() -> str:
    import torch

    return f"torch {torch.__version__}, {torch.backends.cpu.get_cpu_capability()}, {os.cpu_count()} cores"


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "server"))
    sys.path.insert(0, str(REPO / "client"))
    main()
