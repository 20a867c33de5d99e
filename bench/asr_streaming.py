"""Live streaming capacity: long speech replayed at real-time pace over 1, 2, 4 and 8 concurrent streams.

    python bench/asr_streaming.py [--minutes 5] [--streams 1 2 4 8] [--model whisper-tiny.en]
                                  [--dtype auto|int8] [--workers auto|N] [--replicas N] [--torch-threads 1]
                                  [--decode-interval 1.0]

Each stream plays `--minutes` of speech: the shared recordings joined one after another with 0.4 s of
silence between them, looped (each stream starts at a different recording), sent in 100 ms chunks on
a wall-clock schedule (chunk k leaves at start + k x 0.1 s, whatever the server does), as a microphone
would. Per stream and level it measures:
- first interim: from the stream's first chunk to its first interim result;
- final lag: for every final result, its arrival minus the moment the audio of its last word was
  "recorded" (stream start + the result's end offset); p50/p95/max over every final of every stream;
- lag trend: the slope of a line fitted to (audio time, final lag) over all streams, in seconds of lag
  per minute of audio: near 0 when the server keeps up, positive when it falls behind;
- WER vs offline: the streamed finals against the same server's offline (unary) transcripts of the same
  recordings in the same order; and both against the human references;
- RTF: the server's CPU seconds per second of audio streamed; server CPU: its average busy cores;
- refused: streams refused at admission (RESOURCE_EXHAUSTED with a retry hint), not retried;
- relayed: streams whose worker could not admit them and relayed them to a sibling worker (several workers).

The server runs its default process model (`--workers auto`: one process per core, each with `--replicas`
pipelines, default 1); each stream opens its own connection, as separate microphones do, so streams spread
over the processes. `--workers 1` runs one process with cores / torch threads replicas (one worker thread
each, sharing one GIL).
Targets (issue 8, whisper-tiny.en, default config, 2 cores): 1 stream p50 final lag <= 0.6 s; 4 streams
p95 <= 1.5 s; 8 streams for 5 minutes max lag <= 3 s and no upward trend.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from common import SHARED_DATA, ServerProcess, clips, loaded_dtype, percentile, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from wer import wer  # noqa: E402

CLIPS = [
    "audio/jfk.flac",
    "audio/LJ001-0001.wav",
    "audio/LJ001-0002.wav",
    "audio/LJ001-0003.wav",
    "audio/LJ001-0004.wav",
    "audio/librispeech-1995-1837-0001.wav",
]
RATE = 16000
CHUNK_S = 0.1
GAP_S = 0.4


@dataclass
class Stream:
    order: list[int]
    audio: np.ndarray
    started: float = float("nan")
    first_interim_s: float = float("nan")
    # (audio time of the final's end, lag in seconds)
    lags: list[tuple[float, float]] = field(default_factory=list)
    finals: list[str] = field(default_factory=list)
    refused: bool = False
    error: str = ""


def _stat(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pid: int) -> float:
    """CPU time of the server: its process and every worker process under it."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat(int(entry.name))[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, total = {pid}, 0.0
    for _ in range(3):  # supervisor -> workers (-> their helpers)
        tree |= {child for child, parent in parents.items() if parent in tree}
    for member in tree:
        try:
            fields = _stat(member)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def program(recordings: list[np.ndarray], first: int, seconds: float) -> tuple[list[int], np.ndarray]:
    """Recordings from `first` on, looped, with a short gap after each, until `seconds` of audio."""
    order, pieces, total, k = [], [], 0, first
    gap = np.zeros(int(GAP_S * RATE), np.float32)
    while total < seconds * RATE:
        index = k % len(recordings)
        order.append(index)
        pieces += [recordings[index], gap]
        total += len(recordings[index]) + len(gap)
        k += 1
    return order, np.concatenate(pieces)


def realtime(stream: Stream) -> Iterator[np.ndarray]:
    step = int(CHUNK_S * RATE)
    stream.started = time.monotonic()
    for k, at in enumerate(range(0, len(stream.audio), step)):
        delay = stream.started + k * CHUNK_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield stream.audio[at : at + step]


def play(target: str, stream: Stream, options: dict[str, object]) -> None:
    from pipelined import Client
    from pipelined.errors import ResourceExhausted

    try:
        # Its own connection, as a separate microphone client has: the server's worker processes
        # (SO_REUSEPORT) each take whole connections, so streams sharing one would share one process.
        channel = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
        with Client(target, timeout=3600, channel=channel) as client:
            pipe = client.pipeline("automatic-speech-recognition")
            for result in pipe.stream(realtime(stream), sampling_rate=RATE, **options):
                now = time.monotonic()
                if (
                    result.event is None
                    and not result.is_final
                    and stream.first_interim_s != stream.first_interim_s
                ):
                    stream.first_interim_s = now - stream.started
                if result.is_final and result.text.strip():
                    stream.finals.append(result.text)
                    end = result.end or 0.0
                    stream.lags.append((end, now - (stream.started + end)))
    except ResourceExhausted as error:
        stream.refused = "admission" in error.message or "capacity" in error.message
        stream.error = error.message
    except Exception as error:  # reported in the table's notes, not hidden
        stream.error = f"{type(error).__name__}: {error}"


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    if len(points) < 3:
        return float("nan")
    x = np.array([p[0] for p in points]) / 60
    y = np.array([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument(
        "--dtype",
        default=None,
        help="the model's dtype (float32, int8); default: auto (tiny.en: int8 on a CPU)",
    )
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--minutes", type=float, default=5.0, help="audio per stream")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument(
        "--workers", default="auto", help="server processes (the server's default: auto, one per core)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="pipelines per process; default: 1 (workers=1: cores / threads)",
    )
    parser.add_argument("--decode-interval", type=float, default=None, help="default: the server's (1 s)")
    args = parser.parse_args()
    one_process = args.workers == "1"
    replicas = args.replicas or (max(1, (os.cpu_count() or 1) // args.torch_threads) if one_process else 1)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = clips(CLIPS)
    manifest = {e["file"]: e["reference"] for e in json.loads((SHARED_DATA / "manifest.json").read_text())}
    references = [manifest[c] for c in CLIPS]
    options: dict[str, object] = {"interim_results": True}
    if args.decode_interval:
        options["min_decode_interval_s"] = args.decode_interval

    from pipelined_server.audio import decode_encoded

    recordings = [decode_encoded(p.read_bytes(), RATE) for p in paths]
    server_args = ["--model", args.model, "--replicas", str(replicas)]
    if args.dtype:
        server_args += ["--dtype", args.dtype]
    server = ServerProcess(server_args, torch_threads=args.torch_threads, workers=args.workers, metrics=True)
    rows, notes = [], []
    try:
        server.wait_ready()
        from pipelined import Client

        asr = Client(server.target, timeout=600).pipeline("automatic-speech-recognition")
        offline = [asr({"raw": r, "sampling_rate": RATE})["text"] for r in recordings]
        warm = Stream(*program(recordings, 0, 5))
        play(server.target, warm, options)
        for n in args.streams:
            streams = [Stream(*program(recordings, i, args.minutes * 60)) for i in range(n)]
            cpu0, wall0 = cpu_seconds(server.process.pid), time.monotonic()
            relayed0 = server.metric("pipelined_streams_relayed_total")
            threads = [threading.Thread(target=play, args=(server.target, s, options)) for s in streams]
            for t in threads:
                t.start()
                time.sleep(0.25)  # streams open a little apart, as users do
            for t in threads:
                t.join()
            cpu, wall = cpu_seconds(server.process.pid) - cpu0, time.monotonic() - wall0
            played = [s for s in streams if not s.refused and not s.error]
            notes += [f"{n} streams: {s.error}" for s in streams if s.error and not s.refused]
            audio_s = sum(len(s.audio) for s in played) / RATE
            lags = [lag for s in played for _, lag in s.lags]
            points = [p for s in played for p in s.lags]
            firsts = [s.first_interim_s for s in played if s.first_interim_s == s.first_interim_s]
            streamed = " ".join(" ".join(s.finals) for s in played)
            offline_text = " ".join(" ".join(offline[i] for i in s.order) for s in played)
            human = " ".join(" ".join(references[i] for i in s.order) for s in played)
            rows.append(
                [
                    n,
                    sum(s.refused for s in streams),
                    round(server.metric("pipelined_streams_relayed_total") - relayed0),
                    percentile(firsts, 50),
                    percentile(lags, 50),
                    percentile(lags, 95),
                    max(lags) if lags else float("nan"),
                    slope_per_minute(points),
                    wer(offline_text, streamed) if played else float("nan"),
                    wer(human, streamed) if played else float("nan"),
                    wer(human, offline_text) if played else float("nan"),
                    cpu / audio_s if audio_s else float("nan"),
                    cpu / wall,
                ]
            )
            print(table(HEADERS, rows[-1:]), flush=True)
    finally:
        server.stop()
    print(
        f"\nmodel={args.model} dtype={loaded_dtype(args.model, args.dtype)} torch_threads={args.torch_threads} "
        f"workers={args.workers} replicas={replicas} minutes_per_stream={args.minutes} cores={os.cpu_count()}"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(table(HEADERS, rows))
    for note in notes:
        print("error:", note)


HEADERS = [
    "streams",
    "refused",
    "relayed",
    "first interim p50 s",
    "final lag p50 s",
    "final lag p95 s",
    "final lag max s",
    "lag trend s/min",
    "WER vs offline",
    "WER stream vs ref",
    "WER offline vs ref",
    "RTF (CPU s/audio s)",
    "server CPU cores",
]


if __name__ == "__main__":
    main()
