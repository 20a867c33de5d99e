"""Text tasks through the server vs the in-process pipeline, with the server's dynamic batching on and off.

    PYTHONPATH=client:server:tests python bench/text_tasks.py [--requests 240] [--concurrency 1 8 32]
        [--max-batch-size 32] [--torch-threads 1]

Models: text-classification on a small random BERT classifier built here (4 layers, hidden 256, tiny
WordPiece vocab: the weights are random, the compute is that of a small real classifier);
feature-extraction on the embedded all-MiniLM-L6-v2 (mean pooling + normalisation, as served by default).
Inputs: short sentences (4 to 16 words), one per request.

For each model, concurrency and batching setting it prints latency percentiles and throughput, with ratios
against the in-process pipeline called sequentially (one input after another, as a single-process user
calls it; the pipeline is not thread-safe, so that is its best at any concurrency).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import ServerProcess, concurrent_pass, percentile, table

SENTENCES = [
    "the movie was great",
    "john lives in paris and works in london",
    "what is the weather like today in berlin",
    "this book is bad",
    "mary visited new york with her happy family last year",
    "hello world",
    "the city is the capital of france and a great place to visit in the sun",
    "sad music today",
]


def build_classifier(root: Path) -> Path:
    from tiny_text_models import build_tiny_bert

    return build_tiny_bert(
        root / "small-classifier",
        "sequence",
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        initializer_range=0.02,
    )


def in_process(
    task: str, source: str, kwargs: dict[str, Any], requests: int, threads: int
) -> tuple[list[float], float]:
    import numpy as np
    import torch
    import transformers

    torch.set_num_threads(threads)
    pipe = transformers.pipeline(task, model=source)
    pipe(SENTENCES[0])  # warm-up
    latencies = []
    started = time.perf_counter()
    for i in range(requests):
        t0 = time.perf_counter()
        out = pipe(SENTENCES[i % len(SENTENCES)], **kwargs)
        if task == "feature-extraction":  # what the server does for a sentence embedding
            tokens = np.asarray(out[0], dtype=np.float32).mean(axis=0)
            tokens / np.linalg.norm(tokens)
        latencies.append(time.perf_counter() - t0)
    return latencies, requests / (time.perf_counter() - started)


def through_server(
    target: str, task: str, model: str, requests: int, concurrency: int
) -> tuple[list[float], float]:
    from pipelined import Client

    client = Client(target, timeout=120)
    pipe = client.pipeline(task, model=model)
    pipe(SENTENCES[0])  # warm-up
    inputs = [SENTENCES[i % len(SENTENCES)] for i in range(requests)]
    latencies, throughput = concurrent_pass(pipe, inputs, concurrency)
    client.close()
    return latencies, throughput


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=240)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    from pipelined_server.sources.embedded import materialize

    root = Path(tempfile.mkdtemp(prefix="bench-text-"))
    models = {
        "text-classification": ("small-classifier", str(build_classifier(root)), {}),
        "feature-extraction": ("all-minilm-l6-v2", str(materialize("all-minilm-l6-v2")), {}),
    }
    baselines = {
        task: in_process(task, src, kw, args.requests, args.torch_threads)
        for task, (_, src, kw) in models.items()
    }

    rows = []
    for batch_size in (1, args.max_batch_size):
        config = {
            "models": [
                {
                    "name": "small-classifier",
                    "task": "text-classification",
                    "source": models["text-classification"][1],
                    "batching": {"max_batch_size": batch_size, "max_queue_delay_ms": 5},
                },
                {
                    "name": "all-minilm-l6-v2",
                    "source": "embedded:all-minilm-l6-v2",
                    "batching": {"max_batch_size": batch_size, "max_queue_delay_ms": 5},
                },
            ]
        }
        config_path = root / f"config-{batch_size}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        server = ServerProcess(["--config", str(config_path)], torch_threads=args.torch_threads)
        try:
            server.wait_ready()
            for task, (name, _, _) in models.items():
                base_lat, base_tput = baselines[task]
                for concurrency in args.concurrency:
                    lat, tput = through_server(server.target, task, name, args.requests, concurrency)
                    rows.append(
                        [
                            task,
                            name,
                            "off" if batch_size == 1 else f"on ({batch_size})",
                            concurrency,
                            percentile(lat, 50) * 1e3,
                            percentile(lat, 95) * 1e3,
                            percentile(lat, 99) * 1e3,
                            tput,
                            percentile(lat, 50) / percentile(base_lat, 50),
                            tput / base_tput,
                        ]
                    )
        finally:
            server.stop()
    for task, (lat, tput) in baselines.items():
        rows.append(
            [
                task,
                models[task][0],
                "in-process",
                1,
                percentile(lat, 50) * 1e3,
                percentile(lat, 95) * 1e3,
                percentile(lat, 99) * 1e3,
                tput,
                1.0,
                1.0,
            ]
        )
    print(f"\n{args.requests} requests per row, torch threads {args.torch_threads}, {os.cpu_count()} CPUs\n")
    print(
        table(
            [
                "task",
                "model",
                "batching",
                "conc",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "req/s",
                "p50 / local",
                "req/s / local",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
