"""The gRPC floor: a minimal grpc.aio TextService that answers every ClassifyText with one canned response,
or (`--model DIR`) with the model's own answer, computed by the bare pipeline call and nothing else.

Question: how much of a pipelined server's latency at c=1 and ceiling at c=32 is Python gRPC itself? No model,
no adapter, no scheduler, no metrics, no log: one process, one event loop, the same proto (pipelined.v1) and
the same server options gRPC picks by default. `bench/unary_peers.py` drives it with the peers' load generator
next to pipelined, so its row is what no Python gRPC server on this machine can beat.

With `--model`, the question is what a server that does nothing but gRPC and the pipeline call costs, the
call placed as pipelined places it: `--placement loop` runs `loading.run_batch` on the event loop (one input
per call, no batching), `--placement process` sends it to a `batching.model_process.ModelProcess` over its
pipe (pipelined's default for this model). Against these rows, what pipelined adds (adapter, validation,
scheduler, metrics, access log) is what remains; against the canned row, what the model and its placement add.

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/grpc_floor.py --port 50099 [--event-loop asyncio]
        [--model DIR --placement loop|process]

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


def _response(output: Any) -> text_pb2.ClassifyTextResponse:
    labels = output if isinstance(output, list) else [output]
    scores = [common_pb2.LabelScore(label=o["label"], score=o["score"]) for o in labels]
    return text_pb2.ClassifyTextResponse(
        results=[text_pb2.TextClassification(labels=scores)], model="tiny-textcls"
    )


class OnTheLoop(text_pb2_grpc.TextServiceServicer):
    """The pipeline call on the event loop: gRPC, the call, nothing else."""

    def __init__(self, model: str) -> None:
        from pipelined_server.config import ModelSpec
        from pipelined_server.loading import load_pipeline

        self.pipe = load_pipeline(ModelSpec(name="m", task="text-classification", source=model)).pipeline

    async def ClassifyText(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from pipelined_server.loading import run_batch

        return _response(run_batch(self.pipe, [request.inputs[0].text], {})[0])


class InAProcess(text_pb2_grpc.TextServiceServicer):
    """The pipeline call in a model process of its own, answered on the event loop, as pipelined does; one
    call at a time on its pipe (pipelined's scheduler would batch the calls that wait)."""

    def __init__(self, model: str) -> None:
        from pipelined_server.batching.model_process import ModelProcess
        from pipelined_server.config import ModelSpec

        self.process = ModelProcess(ModelSpec(name="m", task="text-classification", source=model), 1)
        self.process.wait_ready()
        self.pipe_free = asyncio.Lock()

    async def ClassifyText(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with self.pipe_free:
            output = (await self.process.run_batch([request.inputs[0].text], {}))[0]
        return _response(output)


async def serve(port: int, servicer: text_pb2_grpc.TextServiceServicer) -> None:
    server = grpc.aio.server()
    text_pb2_grpc.add_TextServiceServicer_to_server(servicer, server)
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
    ap.add_argument("--model", default=None, help="a text-classification model directory (default: canned)")
    ap.add_argument("--placement", choices=("loop", "process"), default="loop")
    a = ap.parse_args()
    if a.model:
        import torch

        torch.set_num_threads(1)
    servicer = (
        Canned() if not a.model else OnTheLoop(a.model) if a.placement == "loop" else InAProcess(a.model)
    )
    with asyncio.Runner(loop_factory=loop_factory(a.event_loop)) as runner:
        runner.run(serve(a.port, servicer))


if __name__ == "__main__":
    main()
