"""Unary recognition through the server vs the in-process pipeline, same model and clips.

    python bench/asr_unary.py [--model whisper-tiny.en] [--rounds 3] [--concurrency 1 4 16] [--torch-threads 1]

Prints latency percentiles and throughput at each concurrency, with ratios against the in-process
pipeline called sequentially (one clip after another, the way a single-process user calls it).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from common import ServerProcess, clips, percentile, table


def decode(data: bytes) -> np.ndarray:
    from pipelined_server.audio import AudioLimits, decode_encoded

    return decode_encoded(data, 16000, AudioLimits())


def in_process(model: str, paths: list[Path], rounds: int, threads: int) -> tuple[list[float], float]:
    """The local pipeline on the same files; decoding is timed too, as the server must decode them."""
    import torch
    import transformers
    from pipelined_server.config import embedded_spec
    from pipelined_server.loading import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(embedded_spec(model)).pipeline
    payloads = [p.read_bytes() for p in paths]
    pipe(decode(payloads[0]))  # warm-up
    latencies = []
    started = time.perf_counter()
    for _ in range(rounds):
        for data in payloads:
            t0 = time.perf_counter()
            pipe(decode(data))
            latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    del pipe, transformers
    return latencies, len(latencies) / elapsed


def through_server(
    target: str, paths: list[Path], rounds: int, concurrency: int
) -> tuple[list[float], float]:
    from pipelined import Client

    payloads = [p.read_bytes() for p in paths] * rounds
    pipe = Client(target).pipeline("automatic-speech-recognition")
    pipe(payloads[0])  # warm-up
    latencies: list[float] = []
    lock = threading.Lock()
    next_index = iter(range(len(payloads)))

    def worker() -> None:
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            t0 = time.perf_counter()
            pipe(payloads[i])
            with lock:
                latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, len(payloads) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--max-batch-size", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = clips()

    base_lat, base_tput = in_process(args.model, paths, args.rounds, args.torch_threads)
    rows = [
        [
            "in-process (sequential)",
            1,
            percentile(base_lat, 50),
            percentile(base_lat, 95),
            percentile(base_lat, 99),
            base_tput,
            1.0,
            1.0,
        ]
    ]
    server = ServerProcess(["--model", args.model], torch_threads=args.torch_threads)
    try:
        server.wait_ready()
        for c in args.concurrency:
            lat, tput = through_server(server.target, paths, args.rounds, c)
            rows.append(
                [
                    "server",
                    c,
                    percentile(lat, 50),
                    percentile(lat, 95),
                    percentile(lat, 99),
                    tput,
                    statistics.median(lat) / statistics.median(base_lat),
                    tput / base_tput,
                ]
            )
    finally:
        server.stop()
    print(f"model={args.model} clips={len(paths)} rounds={args.rounds} torch_threads={args.torch_threads}")
    print(
        table(
            [
                "path",
                "concurrency",
                "p50 s",
                "p95 s",
                "p99 s",
                "clips/s",
                "p50 vs in-process",
                "throughput x",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
