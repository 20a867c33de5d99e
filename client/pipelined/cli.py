"""`pipelined`: the command-line client (transcribe, run, listen, models, health, demo).

Every subcommand takes `--json` (one JSON value per line on stdout, for scripts); progress goes to stderr and
only when stderr is a terminal, so pipes and files get the results alone."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import wave
from collections.abc import Iterator
from typing import Any

import grpc

from .client import DEFAULT_TARGET, Client
from .demo import command as demo_command
from .errors import NotFound, PipelinedError

DEFAULT_PORT = 50051
EPILOG = """exit codes: 0 ok, 1 other error / not serving, 2 usage, 3 not found or invalid argument,
4 unavailable or deadline exceeded, 5 unauthenticated or permission denied, 130 interrupted (Ctrl-C).
The target comes from --target, else $PIPELINED_TARGET, else localhost:50051; a host without a port gets 50051.
The bearer token comes from --token, else $PIPELINED_TOKEN.
Calls wait up to --wait seconds (default 30) while the server starts or a model loads; health never waits."""
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


# Tasks whose stream() yields generated text.
GENERATION_STREAMS = ("text-generation", "image-text-to-text")
# Whisper's window: longer files stream segment by segment unless --no-stream.
STREAM_LONGER_THAN_S = 30.0


def _format_time(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:7.2f}"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, bytes):
        return f"<{len(obj)} bytes>"
    return repr(obj)


def print_json(value: Any) -> None:
    print(json.dumps(value, default=_jsonable, ensure_ascii=False), flush=True)


def audio_duration_s(path: str) -> float | None:
    """The file's duration from its header (soundfile when installed, else WAV), None when unknown."""
    try:
        import soundfile

        return float(soundfile.info(path).duration)
    except ImportError:
        pass
    except Exception:  # a format soundfile does not read (MP3 on old libsndfile, ...): unknown
        return None
    try:
        with wave.open(path) as w:
            return w.getnframes() / float(w.getframerate())
    except (wave.Error, EOFError, OSError):
        return None


class Progress:
    """A progress bar on stderr (tqdm), only when stderr is a terminal; results are printed above it."""

    def __init__(self, total: float | None, unit: str, desc: str) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total,
            unit=unit,
            desc=desc,
            file=sys.stderr,
            disable=not sys.stderr.isatty(),
            leave=False,
            # A terminal that reports no size (some ptys) would get no bar: shutil falls back to 80x24.
            ncols=shutil.get_terminal_size().columns,
            nrows=shutil.get_terminal_size().lines,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} {unit} [{elapsed}<{remaining}]"
            if total
            else None,
        )

    def to(self, done: float, total: float | None = None) -> None:
        if total and not self.bar.total:
            self.bar.total = total
        self.bar.update(max(0.0, done - self.bar.n))

    def write(self, line: str) -> None:
        if self.bar.disable:
            print(line, flush=True)
        else:
            self.bar.write(line, file=sys.stdout)

    def close(self) -> None:
        self.bar.close()


def _stream_file(pipe: Any, path: str, options: dict[str, Any], args: argparse.Namespace) -> None:
    progress = Progress(audio_duration_s(path), "s", os.path.basename(path))
    try:
        for segment in pipe.stream_file(path, **options):
            progress.to(segment["audio_processed_s"], segment["audio_duration_s"])
            if args.json:
                print_json({"file": path, **segment})
            else:
                start, end = segment["timestamp"]
                progress.write(f"[{_format_time(start)} -> {_format_time(end)}]{segment['text']}")
    finally:
        progress.close()


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
        if not os.path.isfile(path) and "://" not in path:
            raise FileNotFoundError(f"no such file: {path!r}")
        streamed = args.stream
        if streamed is None:  # auto: long files stream, segment by segment, with a progress bar
            duration = audio_duration_s(path)
            streamed = duration is not None and duration > STREAM_LONGER_THAN_S
        if streamed:
            _stream_file(pipe, path, options, args)
            continue
        result = pipe(path, **options)
        if args.json:
            print_json({"file": path, **result})
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


def _input(raw: str, chat: bool) -> Any:
    """A JSON object or list when INPUT parses as one, else the text; --chat wraps a text as one user turn
    (chat models answer a bare prompt with little or nothing)."""
    if raw[:1] in "[{":
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            pass
    return [{"role": "user", "content": raw}] if chat else raw


def _inputs(args: argparse.Namespace) -> Iterator[Any]:
    progress = Progress(len(args.inputs), "input", args.task) if len(args.inputs) > 1 else None
    try:
        for raw in args.inputs:
            yield _input(raw, args.chat)
            if progress:
                progress.to(progress.bar.n + 1)
    finally:
        if progress:
            progress.close()


def run(client: Client, args: argparse.Namespace) -> int:
    """Any task: each INPUT is one call (a JSON value when it parses as an object or list, else text)."""
    params = dict(args.param or [])
    if not args.stream:
        pipe = client.pipeline(args.task, model=args.model, **params)
        for value in _inputs(args):
            print_json(pipe(value))
        return 0
    stream_pipe = client.pipeline(args.task, model=args.model)
    if stream_pipe.task not in GENERATION_STREAMS:  # speech's stream() is live audio: `listen`
        print(
            f"pipelined: --stream needs text-generation or image-text-to-text, not {args.task}",
            file=sys.stderr,
        )
        return 2
    for value in _inputs(args):
        generated = False
        for piece in stream_pipe.stream(value, **params):
            generated = generated or bool(piece.strip())
            if args.json:
                print_json({"text": piece})
            else:
                print(piece, end="", flush=True)
        if not args.json:
            print()
        if not generated and isinstance(value, str) and not args.chat:
            print("pipelined: the model generated no text; a chat model needs --chat", file=sys.stderr)
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
    tty = sys.stdout.isatty() and not args.json
    line = ""
    pipe = client.pipeline("automatic-speech-recognition", model=args.model)
    try:
        for result in pipe.stream(source, **options):
            if args.json:
                print_json(dataclasses.asdict(result))
            elif result.event == "speech_ended":
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


MODEL_COLUMNS = (("name", 24), ("task", 32), ("state", 8), ("device", 8), ("dtype", 9), ("source", 0))


def models(client: Client, args: argparse.Namespace) -> int:
    served = client.models()
    if args.json:
        print_json(served)
        return 0
    print("  " + " ".join(f"{name.upper():<{width}}" for name, width in MODEL_COLUMNS).rstrip())
    for m in served:
        marker = "*" if m["default"] else " "
        print(f"{marker} " + " ".join(f"{m[name]!s:<{width}}" for name, width in MODEL_COLUMNS).rstrip())
        if m["error"]:
            print(f"    error: {m['error']}")
    print("* the task's default model (used when a call names no model)")
    return 0


def health(client: Client, args: argparse.Namespace) -> int:
    """SERVING / NOT_SERVING of the server or one model; a model that is not serving says why (loading, or
    its load error). Exit 0 only when serving."""
    try:
        status = client.health(args.service)
    except NotFound:  # the health service says only "not found"
        raise NotFound(f"no model named {args.service!r} is served (`pipelined models` lists them)") from None
    why = ""
    if args.service and status != "SERVING":
        model = client.model(args.service)
        why = f"{model['state']}: {model['error']}" if model["error"] else model["state"]
    if args.json:
        print_json({"service": args.service, "status": status, **({"reason": why} if why else {})})
    else:
        name = f"model {args.service}" if args.service else f"server {client.target}"
        print(f"{name}: {status}" + (f" ({why})" if why else ""))
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
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="wait this long for a server that starts or a model that loads (0: fail at once; default 30)",
    )
    parser.add_argument("--json", action="store_true", help="JSON output, one value per line")
    # The same options after the subcommand (`pipelined health --target H:P`); SUPPRESS keeps the ones given first.
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("transcribe", help="transcribe audio files")
    t.add_argument("files", nargs="+")
    t.add_argument("--model", default=None)
    t.add_argument("--timestamps", choices=["none", "segment", "word", "char"], default="none")
    t.add_argument("--language", default=None)
    t.add_argument("--beams", type=int, default=None)
    t.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"print segments as they are decoded, with progress (default: for files over {STREAM_LONGER_THAN_S:g} s)",
    )
    t.set_defaults(run=transcribe)
    r = sub.add_parser("run", help="run any pipeline task on inputs and print JSON results")
    r.add_argument("task", help="pipeline task, e.g. text-classification, text-generation")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="a text, or a JSON object/list (e.g. a chat)")
    r.add_argument("--model", default=None)
    r.add_argument("--param", action="append", type=_param, metavar="K=V", help="call argument; repeatable")
    r.add_argument("--stream", action="store_true", help="text-generation: print text as it is generated")
    r.add_argument("--chat", action="store_true", help="send each text INPUT as a user message (chat models)")
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
        each.add_argument(
            "--wait", type=float, default=argparse.SUPPRESS, metavar="SECONDS", help="see above"
        )
        each.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON output")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        # health reports readiness, so it never waits for it.
        wait = 0.0 if args.command == "health" else args.wait
        client = Client(
            with_port(args.target),
            timeout=args.timeout,
            wait_for_ready=wait,
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
    except BrokenPipeError:
        # The reader stopped reading (`| head`): not an error of ours. stdout is pointed at devnull so that
        # the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    except (OSError, ValueError) as error:  # a missing or unreadable file, an input the client cannot send
        print(f"pipelined: {error}", file=sys.stderr)
        code = 3
    raise SystemExit(code)


if __name__ == "__main__":
    main()
