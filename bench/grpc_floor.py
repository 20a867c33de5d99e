"""The gRPC floor: a minimal grpc.aio TextService that answers every ClassifyText with one canned response.

Question: how much of a pipelined server's latency at c=1 and ceiling at c=32 is Python gRPC itself? No model,
no adapter, no scheduler, no metrics, no log: one process, one event loop, the same proto (pipelined.v1) and
the same server options gRPC picks by default. `bench/unary_peers.py` drives it with the peers' load generator
next to pipelined, so its row is what no Python gRPC server on this machine can beat.

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/grpc_floor.py --port 50099 [--event-loop asyncio]

The event loop is chosen as pipelined-server chooses its own (`event_loop`, default `auto`).

Prints `listening on 127.0.0.1:PORT` once serving; SIGTERM/SIGINT end it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

import grpc
from pipelined.v1 import common_pb2, text_pb2, text_pb2_grpc
from pipelined_server.cli import loop_factory

# What the tiny classifier answers, give or take the score: one label, the model's name.
CANNED = text_pb2.ClassifyTextResponse(
    results=[text_pb2.TextClassification(labels=[common_pb2.LabelScore(label="LABEL_1", score=0.5123)])],
    model="tiny-textcls",
)


class Canned(text_pb2_grpc.TextServiceServicer):
    async def ClassifyText(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return CANNED


async def serve(port: int) -> None:
    server = grpc.aio.server()
    text_pb2_grpc.add_TextServiceServicer_to_server(Canned(), server)
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"listening on 127.0.0.1:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--event-loop", choices=("auto", "asyncio", "uvloop"), default="auto")
    a = ap.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(a.event_loop)) as runner:
        runner.run(serve(a.port))


if __name__ == "__main__":
    main()
