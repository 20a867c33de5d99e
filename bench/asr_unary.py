"""Unary recognition through the server vs the in-process pipeline, same model and clips.

    python bench/asr_unary.py [--model whisper-tiny.en] [--dtype auto] [--rounds 3] [--concurrency 1 4 16]
                              [--torch-threads 1] [--replicas 2] [--passes 8]

The machine is shared and noisy, so the two sides are measured interleaved: at concurrency 1 each clip
goes through the in-process pipeline and then through the server; at higher concurrency each round runs
the clips sequentially in-process, then concurrently through the server. Ratios are medians over rounds.
A concurrent pass sends the clips `--passes` times over: with the six clips once, the last clip of a pass
runs alone on one replica while the other has nothing left (0.4-0.7 s per clip here: two replicas could
not finish six clips in less than 0.55 of the sequential time, 1.8x), which measures the burst's tail,
not the server's throughput.
Decoding the file is timed on both sides (the server must decode what it receives).
"""

from __future__ import annotations

import argparse
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ServerProcess, clips, concurrent_pass, loaded_dtype, percentile, table, timed


def local_pipeline(model: str, dtype: str, threads: int) -> Callable[[bytes], Any]:
    import torch
    from pipelined_server.audio import AudioLimits, decode_encoded
    from pipelined_server.config import embedded_spec
    from pipelined_server.loading import load_pipeline

    torch.set_num_threads(threads)
    pipe = load_pipeline(embedded_spec(model).model_copy(update={"dtype": dtype})).pipeline
    return lambda data: pipe(decode_encoded(data, 16000, AudioLimits()))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument(
        "--dtype", default="auto", help="both sides' dtype (float32, int8); auto: tiny.en int8 on a CPU"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--replicas", type=int, default=2, help="server pipelines sharing the weights (one per core)"
    )
    parser.add_argument("--passes", type=int, default=8, help="times a concurrent pass sends the clips")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from pipelined import Client

    payloads = [Path(p).read_bytes() for p in clips()]
    local = local_pipeline(args.model, args.dtype, args.torch_threads)
    server = ServerProcess(
        ["--model", args.model, "--dtype", args.dtype, "--replicas", str(args.replicas)],
        torch_threads=args.torch_threads,
    )
    rows = []
    try:
        server.wait_ready()
        remote_pipe = Client(server.target).pipeline("automatic-speech-recognition")
        remote = lambda data: remote_pipe(data)  # noqa: E731
        local(payloads[0]), remote(payloads[0])  # warm-up both
        for concurrency in args.concurrency:
            local_lat: list[float] = []
            server_lat: list[float] = []
            ratios: list[float] = []
            for _ in range(args.rounds):
                if concurrency == 1:
                    for data in payloads:
                        local_lat.append(timed(lambda d=data: local(d)))
                        server_lat.append(timed(lambda d=data: remote(d)))
                    continue
                lat, local_tput = concurrent_pass(local, payloads * args.passes, 1)
                local_lat += lat
                lat, server_tput = concurrent_pass(remote, payloads * args.passes, concurrency)
                server_lat += lat
                ratios.append(server_tput / local_tput)
            # At concurrency 1 the calls alternate, so total time is the fair throughput comparison.
            ratio_tput = sum(local_lat) / sum(server_lat) if concurrency == 1 else statistics.median(ratios)
            rows.append(
                [
                    concurrency,
                    percentile(local_lat, 50),
                    percentile(server_lat, 50),
                    percentile(server_lat, 95),
                    percentile(server_lat, 99),
                    percentile(server_lat, 50) / percentile(local_lat, 50),
                    ratio_tput,
                ]
            )
    finally:
        server.stop()
    print(
        f"model={args.model} dtype={loaded_dtype(args.model, args.dtype)} clips={len(payloads)} "
        f"rounds={args.rounds} passes={args.passes} torch_threads={args.torch_threads} "
        f"server replicas={args.replicas}"
    )
    print(
        table(
            [
                "concurrency",
                "in-process p50 s",
                "server p50 s",
                "server p95 s",
                "server p99 s",
                "p50 server/in-process",
                "throughput server/in-process",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
