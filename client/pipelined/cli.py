"""`pipelined`: the command-line client (transcribe, run, listen, models, health, demo)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import grpc

from .client import DEFAULT_TARGET, Client
from .demo import command as demo_command
from .errors import PipelinedError

DEFAULT_PORT = 50051
EPILOG = """exit codes: 0 ok, 1 other error / not serving, 2 usage, 3 not found or invalid argument,
4 unavailable or deadline exceeded, 5 unauthenticated or permission denied, 130 interrupted (Ctrl-C).
The target comes from --target, else $PIPELINED_TARGET, else localhost:50051; a host without a port gets 50051.
The bearer token comes from --token, else $PIPELINED_TOKEN."""
EXIT_CODES = {
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.INVALID_ARGUMENT: 3,
    grpc.StatusCode.UNAVAILABLE: 4,
    grpc.StatusCode.DEADLINE_EXCEEDED: 4,
    grpc.StatusCode.UNAUTHENTICATED: 5,
    grpc.StatusCode.PERMISSION_DENIED: 5,
}
# Connection options: before or after the subcommand (flag, help).
CONNECTION_FLAGS = (
    ("--ca-file", "PEM CA of the server's certificate: connect with TLS"),
    ("--cert-file", "PEM client certificate (mutual TLS, with --key-file)"),
    ("--key-file", "PEM key of --cert-file"),
)


def with_port(target: str) -> str:
    """host -> host:50051 (gRPC would otherwise pick 443); host:port, [v6]:port and scheme:... are kept."""
    if "://" in target or target.startswith(("unix:", "dns:", "ipv4:", "ipv6:")):
        return target
    host = target.rsplit("]", 1)[-1]
    return target if ":" in host else f"{target}:{DEFAULT_PORT}"


def _format_time(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:7.2f}"


def transcribe(client: Client, args: argparse.Namespace) -> int:
    options: dict[str, Any] = {}
    if args.timestamps != "none":
        options["return_timestamps"] = True if args.timestamps == "segment" else args.timestamps
    if args.language:
        options["language"] = args.language
    if args.beams:
        options["num_beams"] = args.beams
    pipe = client.pipeline("automatic-speech-recognition", model=args.model)
    for path in args.files:
        if args.stream:
            for segment in pipe.stream_file(path, **options):
                start, end = segment["timestamp"]
                print(f"[{_format_time(start)} -> {_format_time(end)}]{segment['text']}", flush=True)
            continue
        result = pipe(path, **options)
        if args.json:
            print(json.dumps({"file": path, **result}))
        elif "chunks" in result:
            print(f"{path}:")
            for chunk in result["chunks"]:
                start, end = chunk["timestamp"]
                print(f"  [{_format_time(start)} -> {_format_time(end)}]{chunk['text']}")
        else:
            print(f"{path}:{result['text']}")
    return 0


def _param(text: str) -> tuple[str, Any]:
    """k=v; v is read as JSON when it parses (numbers, true/false, null, lists), else kept as a string."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return repr(obj)


def run(client: Client, args: argparse.Namespace) -> int:
    """Any task: each INPUT is one call (a JSON value when it parses as an object or list, else text)."""
    params = dict(args.param or [])
    pipe = client.pipeline(args.task, model=args.model, **params) if not args.stream else None
    for raw in args.inputs:
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except json.JSONDecodeError:
                value = raw
        if args.stream:
            stream_pipe = client.pipeline(args.task, model=args.model)
            if not hasattr(stream_pipe, "stream"):
                raise SystemExit(f"pipelined: --stream needs text-generation, not {args.task}")
            for piece in stream_pipe.stream(value, **params):
                print(piece, end="", flush=True)
            print()
            continue
        assert pipe is not None
        print(json.dumps(pipe(value), default=_jsonable, ensure_ascii=False))
    return 0


def listen(client: Client, args: argparse.Namespace) -> int:
    """Live transcript: interim text is rewritten in place (dim), finals stay; a line per utterance."""
    from .streaming import FileSource, MicrophoneSource

    if args.mic == bool(args.file):
        print("pipelined listen: give either --mic or a FILE", file=sys.stderr)
        return 2
    source: Any = MicrophoneSource() if args.mic else FileSource(args.file, realtime=args.realtime)
    options: dict[str, Any] = {"interim_results": not args.no_interim}
    if args.language:
        options["language"] = args.language
    if args.decode_interval:
        options["min_decode_interval_s"] = args.decode_interval
    tty = sys.stdout.isatty()
    line = ""
    pipe = client.pipeline("automatic-speech-recognition", model=args.model)
    try:
        for result in pipe.stream(source, **options):
            if result.event == "speech_ended":
                if line:
                    print(("\r\033[K" if tty else "") + line, flush=True)
                line = ""
            elif result.event is None and result.is_final:
                line = f"{line} {result.text}".strip()
                if tty:
                    print("\r\033[K" + line, end="", flush=True)
            elif result.event is None and tty:
                print(f"\r\033[K{line} \033[2m{result.text}\033[0m", end="", flush=True)
    except KeyboardInterrupt:
        pass
    if line:
        print(("\r\033[K" if tty else "") + line, flush=True)
    return 0


def models(client: Client, args: argparse.Namespace) -> int:
    for m in client.models():
        marker = "*" if m["default"] else " "
        print(
            f"{marker} {m['name']:<24} {m['task']:<32} {m['state']:<8} {m['device']:<8} {m['dtype']:<9} {m['source']}"
        )
        if m["error"]:
            print(f"    error: {m['error']}")
    return 0


def health(client: Client, args: argparse.Namespace) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelined",
        description="Call a pipelined server.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--target",
        default=os.environ.get("PIPELINED_TARGET") or DEFAULT_TARGET,
        help=f"server address (default $PIPELINED_TARGET or {DEFAULT_TARGET})",
    )
    parser.add_argument("--timeout", type=float, default=None, help="deadline per call, in seconds")
    for flag, text in CONNECTION_FLAGS:
        parser.add_argument(flag, default=None, help=text)
    parser.add_argument("--tls", action="store_true", help="TLS with the system's root CAs")
    parser.add_argument(
        "--token",
        default=os.environ.get("PIPELINED_TOKEN") or None,
        help="bearer token (default $PIPELINED_TOKEN)",
    )
    # The same options after the subcommand (`pipelined health --target H:P`); SUPPRESS keeps the ones given first.
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("files", nargs="+")
    t.add_argument("--model", default=None)
    t.add_argument("--timestamps", choices=["none", "segment", "word", "char"], default="none")
    t.add_argument("--language", default=None)
    t.add_argument("--beams", type=int, default=None)
    t.add_argument("--stream", action="store_true", help="long audio: print segments as they are decoded")
    t.add_argument("--json", action="store_true")
    t.set_defaults(run=transcribe)
    r = sub.add_parser("run", help="run any pipeline task on inputs and print JSON results")
    r.add_argument("task", help="pipeline task, e.g. text-classification, text-generation")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="a text, or a JSON object/list (e.g. a chat)")
    r.add_argument("--model", default=None)
    r.add_argument("--param", action="append", type=_param, metavar="K=V", help="call argument; repeatable")
    r.add_argument("--stream", action="store_true", help="text-generation: print text as it is generated")
    r.set_defaults(run=run)
    li = sub.add_parser(
        "listen",
        help="live transcript of the microphone or of a file replayed as live audio",
    )
    li.add_argument("file", nargs="?", default=None, help="a recording to stream")
    li.add_argument("--mic", action="store_true", help="stream the microphone (needs pipelined[mic])")
    li.add_argument(
        "--realtime", action="store_true", help="replay FILE at real-time pace (else as fast as read)"
    )
    li.add_argument("--model", default=None)
    li.add_argument("--language", default=None)
    li.add_argument("--no-interim", action="store_true", help="print final text only")
    li.add_argument("--decode-interval", type=float, default=None, help="seconds of new speech per re-decode")
    li.set_defaults(run=listen)
    m = sub.add_parser("models", help="list served models")
    m.set_defaults(run=models)
    h = sub.add_parser("health", help="server (or one model's) health")
    h.add_argument("service", nargs="?", default="", help="a model name; empty for the whole server")
    h.set_defaults(run=health)
    d = sub.add_parser("demo", help="serve a web demo of the served models (needs pipelined[demo])")
    demo_command.add_arguments(d)
    d.set_defaults(run=demo_command.run)
    for each in (t, r, li, m, h, d):
        each.add_argument("--target", default=argparse.SUPPRESS, help="server address")
        each.add_argument(
            "--timeout", type=float, default=argparse.SUPPRESS, help="deadline per call, in seconds"
        )
        for flag, text in (*CONNECTION_FLAGS, ("--token", "bearer token")):
            if flag not in each._option_string_actions:  # `demo` declares --ca-file and --token itself
                each.add_argument(flag, default=argparse.SUPPRESS, help=text)
        each.add_argument("--tls", action="store_true", default=argparse.SUPPRESS, help="TLS, system roots")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        client = Client(
            with_port(args.target),
            timeout=args.timeout,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            token=args.token,
            tls=args.tls,
        )
        with client:
            code = args.run(client, args)
    except PipelinedError as error:
        print(f"pipelined: {error}", file=sys.stderr)
        code = EXIT_CODES.get(error.code, 1)
    except KeyboardInterrupt:
        print("pipelined: interrupted", file=sys.stderr)
        code = 130
    except OSError as error:  # a missing or unreadable file
        print(f"pipelined: {error}", file=sys.stderr)
        code = 3
    raise SystemExit(code)


if __name__ == "__main__":
    main()
