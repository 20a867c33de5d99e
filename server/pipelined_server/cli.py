"""`pipelined-server`: flags, start-up, and SIGTERM/SIGINT handling."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import logs
from .config import DEFAULT_PORT, ServerConfig, check_devices, check_files, resolve_config
from .errors import ConfigError
from .memory_budgets import check_budgets
from .workers import Supervisor, binds_early, is_worker, resolve_workers, watch_parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pipelined-server",
        description="Serve transformers pipelines over gRPC.",
        epilog="PIPELINED_<KEY> environment variables override the config file and flags override both; "
        "`__` separates nested keys and list indexes (PIPELINED_PORT=6000, "
        "PIPELINED_LIMITS__MAX_INPUTS_PER_REQUEST=32, PIPELINED_MODELS__0__REPLICAS=2). "
        "A bad config exits with status 2 and names the key.",
    )
    parser.add_argument("--config", type=Path, help="YAML or TOML file naming the models to serve")
    parser.add_argument("--host", help="address to bind (default [::])")
    parser.add_argument("--port", type=int, help=f"gRPC port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument("--metrics-port", type=int, help="Prometheus port (default 9464; 0 disables)")
    parser.add_argument("--model", help="serve one model without a file: embedded name, local dir or Hub id")
    parser.add_argument("--task", help="pipeline task of --model (required unless it is embedded)")
    parser.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:N, mps, xpu[:N] or auto (device_map='auto')"
    )
    parser.add_argument("--dtype", default=None, help="auto, float32, float16, bfloat16 or int8")
    parser.add_argument("--torch-threads", type=int, help="torch intra-op threads (default 1)")
    parser.add_argument(
        "--replicas", type=int, default=None, help="--model: pipelines sharing its weights, one thread each"
    )
    parser.add_argument(
        "--workers", help="server processes on the port: 'auto' (one per core for CPU models) or a count"
    )
    parser.add_argument(
        "--health-port", type=int, help="also serve grpc.health.v1 alone in plaintext here (TLS + probes)"
    )
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS (with --tls-key)")
    parser.add_argument("--tls-key", help="PEM private key of --tls-cert")
    parser.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed (mutual TLS)")
    parser.add_argument(
        "--auth-tokens-file", help="YAML bearer tokens (tokens: [{name, token, models?}]); SIGHUP re-reads it"
    )
    parser.add_argument(
        "--event-loop", choices=("auto", "asyncio", "uvloop"), help="auto (default): uvloop when installed"
    )
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-format", choices=("text", "json"), help="log lines (default: config, else text)"
    )
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> ServerConfig:
    """The file (or the defaults), then PIPELINED_ environment variables, then the flags."""
    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "metrics_port": args.metrics_port,
        "torch_threads": args.torch_threads,
        "health_port": args.health_port,
        "workers": args.workers if args.workers in (None, "auto") else _count(args.workers),
        "event_loop": args.event_loop,
    }
    if args.model:
        overrides["models"] = [_single_model(args)]
    tls = {"cert_file": args.tls_cert, "key_file": args.tls_key, "client_ca_file": args.tls_client_ca}
    overrides["tls"] = {k: v for k, v in tls.items() if v} or None
    overrides["auth"] = {"tokens_file": args.auth_tokens_file} if args.auth_tokens_file else None
    overrides["logging"] = {"format": args.log_format} if args.log_format else None
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return resolve_config(args.config, os.environ if environ is None else environ, overrides)


def _count(value: str) -> int | str:
    """A flag's number, or the text as given so that validation names it."""
    return int(value) if value.isdigit() else value


def _single_model(args: argparse.Namespace) -> dict[str, Any]:
    from .sources.embedded import EMBEDDED_MODELS

    if args.model in EMBEDDED_MODELS:
        model = {"name": args.model, "source": f"embedded:{args.model}"}
    elif not args.task:
        raise ConfigError("--task is required with --model unless the model is embedded")
    else:
        model = {"name": Path(args.model).name or args.model, "task": args.task, "source": args.model}
    changes = {"device": args.device, "dtype": args.dtype, "replicas": args.replicas}
    return {**model, "default": True, **{k: v for k, v in changes.items() if v is not None}}


# After the grace period, the calls still running are cancelled and their work stops at its next chunk or
# token (batching/abandon.py); one forward pass cannot be interrupted, so the process exits at this many
# seconds past the grace whatever is still running.
EXIT_MARGIN_S = 5.0


def _exit_now() -> None:
    logging.getLogger(__name__).warning(
        "work still running %.0f s past the grace period: exiting", EXIT_MARGIN_S
    )
    _flush_output()
    os._exit(1)


def _flush_output() -> None:
    """What os._exit would lose: the log lines held by the batched handler (logs.py), then the streams."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()


def _exit_after(seconds: float) -> threading.Timer:
    """A watchdog thread: it exits even when the event loop or the interpreter's exit waits on a worker."""
    timer = threading.Timer(seconds, _exit_now)
    timer.daemon = True
    timer.start()
    return timer


async def serve(config: ServerConfig) -> None:
    import torch

    from .app import App

    torch.set_num_threads(config.torch_threads)
    app = App.build(config)
    if config.metrics_port:
        # The same host as gRPC, and HTTPS with the server's certificate when TLS is on (scrapers are
        # not asked for a client certificate: Prometheus scrape configs rarely have one).
        app.metrics.serve(config.metrics_port, config.host, config.tls.cert_file, config.tls.key_file)
    stop = asyncio.Event()
    bind_failures: list[Exception] = []

    # A worker that binds once loaded cannot raise from start(): it stops, and exits 1 for its supervisor.
    def on_bind_failure(exc: Exception) -> None:
        bind_failures.append(exc)
        stop.set()

    app.on_bind_failure = on_bind_failure
    await app.start()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)

    def on_signal() -> None:
        stop.set()
        for sig in signals:
            # A second SIGTERM/SIGINT ends the process at once, in the kernel: the operator does not want to
            # wait for the drain, and no Python code (nor a busy event loop) stands in the way.
            loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL)

    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    # SIGHUP re-reads the tokens (the supervisor of several workers passes it on); without tokens it is
    # ignored rather than ending the server (its default action).
    tokens = app.tokens
    log = logging.getLogger(__name__)
    loop.add_signal_handler(signal.SIGHUP, tokens.reload if tokens else lambda: log.info("SIGHUP: no tokens"))
    # The task is held here: the loop keeps only weak references.
    parent_watch = loop.create_task(watch_parent(stop)) if is_worker() else None
    log.info("event loop: %s", type(loop).__module__.partition(".")[0])
    if binds_early():  # a worker that binds once loaded logs "listening on" then (App.start)
        print(f"pipelined-server listening on {config.host}:{app.port}", flush=True)
    await stop.wait()
    if parent_watch is not None:
        parent_watch.cancel()
    log.info("draining (grace %.0f s)", config.grace_period_s)
    _exit_after(config.grace_period_s + EXIT_MARGIN_S)
    await app.drain()
    if bind_failures:
        raise SystemExit(1)


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The server's event loop: uvloop for `auto` on Linux when it is installed, asyncio's own otherwise.

    Why uvloop: the server's own asyncio work per call (tasks, futures, the scheduler's wake-ups, the pipe to a
    model process) runs in C instead of Python. Peers' text classifier, one connection, one worker, three
    interleaved runs on the shared 2-core machine (loaded: about one core busy with other work): CPU of the
    serving process per call at c=32 0.63 ms against 0.76 ms with asyncio's loop, c=8 534 against 446 req/s,
    c=32 813 against 647 req/s; a later run (3 rounds, c=1 and c=32) had the same CPU per call at c=32 (0.85 ms)
    and c=1 p50 5.11 against 6.81 ms. The bare gRPC floor (bench/grpc_floor.py) gains little from it (c=1 p50
    0.68 against 0.71 ms, c=32 the same): what uvloop saves is pipelined's, not gRPC's. grpc.aio runs on it
    unchanged (unary calls, live streams and the fault suite pass on it); `event_loop: asyncio` keeps
    asyncio's own loop."""
    if choice == "asyncio" or (choice == "auto" and not sys.platform.startswith("linux")):
        return None
    try:
        import uvloop
    except ImportError as exc:
        if choice == "uvloop":
            raise ConfigError("event_loop: uvloop is not installed (pip install uvloop)") from exc
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        config = build_config(args)
        check_devices(config)
        check_files(config)
        loop_factory(config.event_loop)  # `uvloop` asked for and missing: refused before anything loads
        if not is_worker():  # the supervisor checked it before starting the workers
            check_budgets(config.models)
    except ConfigError as exc:
        print(f"pipelined-server: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    logs.setup(args.log_level, config.logging.format, access_log=config.logging.access_log)
    count = 1 if is_worker() else resolve_workers(config)
    if count > 1:
        raise SystemExit(Supervisor(config, sys.argv[1:] if argv is None else argv, count).run())
    with asyncio.Runner(loop_factory=loop_factory(config.event_loop)) as runner:
        runner.run(serve(config))
    # A model still loading holds a worker thread that would block interpreter exit; the drain is done.
    _flush_output()
    os._exit(0)


if __name__ == "__main__":
    main()
