"""Soak: live streams and unary calls at once for minutes; zero lost or wrong responses, memory flat.

    python bench/soak.py [--minutes 3] [--streams 64] [--unary 1000] [--workers auto] [--clients 8]
                         [--stream-model whisper-tiny.en] [--unary-model all-minilm-l6-v2]

The server runs on the embedded defaults (but `streaming.max_streams_per_peer`: every stream comes from
this host) in its own process (`--workers auto`: one worker per core, each counted in the memory
figures), called by `--clients` SDK clients (connections; the calls are dealt round-robin among them).
All at once, for `--minutes`:
- `--unary` tasks each send sentence embeddings (feature-extraction) one after another; every answer is
  checked against the in-process transformers pipeline on the same weights (mean pooling, normalised;
  cosine >= 0.999: batching may change float rounding, never the vector);
- `--streams` tasks (starting spread over `--ramp-s`, as callers arrive: admission admits streams while
  the model is not measured yet, so 64 opened in the same instant would all be admitted and overload it)
  each stream ../shared/data/audio/jfk.flac at real-time pace, again and again. With
  admission control most of them are refused at first on a small machine (RESOURCE_EXHAUSTED with a retry
  hint): a refused stream waits `error.retry_after_s` and tries again, until admitted within the run.
  Every completed stream's finals are checked against the in-process pipeline's transcript of the clip
  (word error rate at most `--max-wer`: live decoding cuts windows differently, it must not lose words).

Lost: a call or stream that ended with an error other than an admission refusal. Unfinished: calls still
running `--drain-s` after the soak ended (cancelled then; a failure too: an overloaded server must refuse,
not stall). Memory: the RSS of every server process (the supervisor and all workers), sampled every 5 s;
the table shows it at the start, the middle and the end, and the end may exceed the sample after the first
minute of warm-up by at most `--max-growth` percent. The script prints two tables and exits 1 on any wrong,
lost or unfinished response or memory growth past the bound.

Expected output (figures vary; the counts of wrong, lost and unfinished must be 0):

    | calls        | ok    | wrong | lost | unfinished | refused | retried | p50 s | p99 s | errors |
    |--------------|-------|-------|------|------------|---------|---------|-------|-------|--------|
    | unary        | 51234 | 0     | 0    | 0          | 0       | 0       | 0.412 | 1.904 | -      |
    | live streams | 140   | 0     | 0    | 0          | 905     | 905     | 13.1  | 15.2  | -      |
    | RSS start MiB | RSS after warm-up MiB | RSS middle MiB | RSS end MiB | RSS max MiB | growth after warm-up % |
    ...
    soak passed: 0 wrong, lost or unfinished; memory growth 1.2%
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from common import SHARED_DATA, ServerProcess, table

SENTENCES = [
    f"Sentence number {i} is about {w}." for i, w in enumerate(["cats", "dogs", "rain", "code", "music"] * 4)
]
CLIP = "audio/jfk.flac"


@dataclass
class Tally:
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    unfinished: int = 0
    # Streams refused by admission (RESOURCE_EXHAUSTED with a retry hint), and tries after a refusal.
    refused: int = 0
    retried: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    worst_wer: float = 0.0

    def error(self, exc: BaseException) -> None:
        self.lost += 1
        name = f"{type(exc).__name__}: {getattr(exc, 'message', exc)}"[:120]
        self.errors[name] = self.errors.get(name, 0) + 1


def local_embeddings(model: str) -> list[np.ndarray]:
    """The in-process pipeline's sentence embeddings: token vectors, mean-pooled and normalised (what the
    server's `request_defaults: {pooling: mean, normalize: true}` for the embedded MiniLM computes)."""
    import transformers
    from pipelined_server.sources.embedded import materialize

    pipe = transformers.pipeline("feature-extraction", model=str(materialize(model)))
    out = []
    for sentence in SENTENCES:
        tokens = np.asarray(pipe(sentence)[0], dtype=np.float32)
        mean = tokens.mean(axis=0)
        out.append(mean / np.linalg.norm(mean))
    return out


def local_transcript(model: str, path: Path) -> str:
    """The in-process pipeline's transcript of the clip (greedy, as the embedded Whisper is served)."""
    import transformers
    from pipelined_server.audio import decode_encoded
    from pipelined_server.sources.embedded import materialize

    pipe = transformers.pipeline("automatic-speech-recognition", model=str(materialize(model)))
    rate = pipe.feature_extractor.sampling_rate
    samples = decode_encoded(path.read_bytes(), rate)  # as the server decodes it (no ffmpeg binary)
    return str(pipe({"raw": samples, "sampling_rate": rate}, generate_kwargs={"num_beams": 1})["text"])


async def unary_worker(pipe: Any, expected: list[np.ndarray], until: float, tally: Tally, index: int) -> None:
    i = index
    while time.monotonic() < until:
        sentence = i % len(SENTENCES)
        i += 1
        started = time.monotonic()
        try:
            vector = np.asarray(await pipe(SENTENCES[sentence]), dtype=np.float32).ravel()
        except Exception as exc:  # every failure is a lost response, counted by type
            tally.error(exc)
            continue
        tally.latencies.append(time.monotonic() - started)
        ref = expected[sentence]
        cosine = float(vector @ ref / (np.linalg.norm(vector) * np.linalg.norm(ref) + 1e-12))
        if cosine >= 0.999:
            tally.ok += 1
        else:
            tally.wrong += 1


async def stream_worker(
    asr: Any, path: Any, expected: str, until: float, tally: Tally, max_wer: float, start_s: float
) -> None:
    """Streams the clip again and again; a refusal with a retry hint is waited out and retried (within
    the run), any other error is a lost stream."""
    from pipelined.errors import ResourceExhausted
    from pipelined.streaming import FileSource
    from wer import wer

    refused_before = False
    await asyncio.sleep(start_s)
    while time.monotonic() < until:
        started = time.monotonic()
        finals: list[str] = []
        if refused_before:
            tally.retried += 1
        try:
            async for result in asr.stream(FileSource(path, realtime=True)):
                if result.is_final:
                    finals.append(result.text)
        except ResourceExhausted as exc:
            if exc.retry_after_s is None or finals:
                tally.error(exc)  # not an admission refusal: the stream was cut
                refused_before = False
                continue
            tally.refused += 1
            refused_before = True
            await asyncio.sleep(min(exc.retry_after_s, max(0.0, until - time.monotonic())))
            continue
        except Exception as exc:
            tally.error(exc)
            refused_before = False
            continue
        refused_before = False
        tally.latencies.append(time.monotonic() - started)
        error_rate = wer(expected, " ".join(finals))
        tally.worst_wer = max(tally.worst_wer, error_rate)
        if finals and error_rate <= max_wer:
            tally.ok += 1
        else:
            tally.wrong += 1
            print(f"wrong stream (WER {error_rate:.2f}): {' '.join(finals)!r}", flush=True)


def server_rss_mib(pid: int) -> float:
    """Resident memory of the server and every process under it (the supervisor and its workers)."""
    process = psutil.Process(pid)
    total = 0
    for proc in (process, *process.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total / 2**20


async def sample_rss(
    pid: int, until: float, samples: list[tuple[float, float]], tallies: dict[str, Tally]
) -> None:
    """RSS every 5 s; a progress line every 30 s (a run cut short still says what it saw)."""
    start = time.monotonic()
    while time.monotonic() < until:
        samples.append((time.monotonic() - start, server_rss_mib(pid)))
        if len(samples) % 6 == 0:
            counts = "; ".join(
                f"{k}: ok {t.ok} wrong {t.wrong} lost {t.lost} refused {t.refused}"
                for k, t in tallies.items()
            )
            print(f"[{samples[-1][0]:.0f} s] RSS {samples[-1][1]:.0f} MiB; {counts}", flush=True)
        await asyncio.sleep(5)
    samples.append((time.monotonic() - start, server_rss_mib(pid)))


async def soak(
    args: argparse.Namespace, target: str, pid: int, embeddings: list[np.ndarray], transcript: str
) -> tuple[Tally, Tally, list[tuple[float, float]]]:
    from pipelined.aio import Client

    # Several clients, as many callers would be: each has its own connection, which the kernel gives to
    # one of the workers (SO_REUSEPORT), so every worker serves its share.
    clients = [Client(target) for _ in range(args.clients)]
    embeds = [c.pipeline("feature-extraction", model=args.unary_model) for c in clients]
    asrs = [c.pipeline("automatic-speech-recognition", model=args.stream_model) for c in clients]
    path = args.data / CLIP
    until = time.monotonic() + args.minutes * 60
    unary, streams, rss = Tally(), Tally(), []
    sampler = asyncio.ensure_future(sample_rss(pid, until, rss, {"unary": unary, "streams": streams}))
    workers = {
        **{
            asyncio.ensure_future(unary_worker(embeds[i % len(embeds)], embeddings, until, unary, i)): unary
            for i in range(args.unary)
        },
        **{
            asyncio.ensure_future(
                stream_worker(
                    asrs[i % len(asrs)],
                    path,
                    transcript,
                    until,
                    streams,
                    args.max_wer,
                    i * args.ramp_s / max(args.streams, 1),
                )
            ): streams
            for i in range(args.streams)
        },
    }
    await sampler
    _, pending = await asyncio.wait(workers, timeout=args.drain_s)
    for task in pending:
        workers[task].unfinished += 1
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return unary, streams, rss


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--streams", type=int, default=64)
    parser.add_argument("--unary", type=int, default=1000)
    parser.add_argument("--workers", default="auto", help="server processes (auto: one per core)")
    parser.add_argument("--clients", type=int, default=8, help="SDK clients (connections) sharing the calls")
    parser.add_argument(
        "--ramp-s", type=float, default=20.0, help="streams start spread over this long (admission measures)"
    )
    parser.add_argument("--stream-model", default="whisper-tiny.en")
    parser.add_argument("--unary-model", default="all-minilm-l6-v2")
    parser.add_argument("--max-wer", type=float, default=0.15, help="against the in-process transcript")
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for calls in flight at the end")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared recordings folder")
    parser.add_argument("--max-growth", type=float, default=10.0, help="percent")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Every stream comes from this one host, standing for many callers: the per-address stream limit
    # (16 by default) would refuse most of them for good (no retry hint), so it is lifted to --streams.
    os.environ.setdefault("PIPELINED_STREAMING__MAX_STREAMS_PER_PEER", str(max(args.streams, 1)))
    embeddings = local_embeddings(args.unary_model)
    transcript = local_transcript(args.stream_model, args.data / CLIP)
    print(f"in-process transcript of {CLIP}: {transcript.strip()!r}", flush=True)
    server = ServerProcess([], workers=args.workers)
    # Stopped by a signal (a timeout), the server process still goes with us.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.wait_ready()
        unary, streams, rss = asyncio.run(
            soak(args, server.target, server.process.pid, embeddings, transcript)
        )
    finally:
        server.stop()
    rows = []
    for name, tally in (("unary", unary), ("live streams", streams)):
        lat = sorted(tally.latencies)
        rows.append(
            [
                name,
                tally.ok,
                tally.wrong,
                tally.lost,
                tally.unfinished,
                tally.refused,
                tally.retried,
                statistics.median(lat) if lat else float("nan"),
                lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
                "; ".join(f"{k} x{v}" for k, v in tally.errors.items()) or "-",
            ]
        )
    headers = ["calls", "ok", "wrong", "lost", "unfinished", "refused", "retried", "p50 s", "p99 s", "errors"]
    print(table(headers, rows))
    print(f"live streams: worst WER against the in-process transcript {streams.worst_wer:.3f}")
    warm = [mib for t, mib in rss if t >= 60] or [mib for _, mib in rss]
    growth = 100.0 * (warm[-1] - warm[0]) / warm[0] if warm else float("nan")
    middle = min(rss, key=lambda s: abs(s[0] - rss[-1][0] / 2))[1]
    print(
        table(
            [
                "RSS start MiB",
                "RSS after warm-up MiB",
                "RSS middle MiB",
                "RSS end MiB",
                "RSS max MiB",
                "growth after warm-up %",
            ],
            [[rss[0][1], warm[0], middle, rss[-1][1], max(m for _, m in rss), growth]],
        )
    )
    print(
        f"command: python bench/soak.py --minutes {args.minutes:g} --streams {args.streams} "
        f"--unary {args.unary} --workers {args.workers} --clients {args.clients}"
    )
    failed = sum(t.wrong + t.lost + t.unfinished for t in (unary, streams))
    never_admitted = streams.ok + streams.wrong + streams.lost == 0 and args.streams > 0
    if failed or growth > args.max_growth or never_admitted:
        raise SystemExit(
            f"soak failed: {failed} wrong, lost or unfinished responses, memory growth {growth:.1f}%"
            + ("; no stream was ever admitted" if never_admitted else "")
        )
    print(f"soak passed: 0 wrong, lost or unfinished; memory growth {growth:.1f}%")


if __name__ == "__main__":
    main()
