"""Soak: live streams and unary calls at once for minutes; zero lost or wrong responses, memory flat.

    python bench/soak.py [--minutes 3] [--streams 64] [--unary 1000] [--stream-model whisper-tiny.en]
                         [--unary-model all-minilm-l6-v2]

The server runs on the embedded defaults in its own process. `--streams` tasks each stream
../shared/data/audio/jfk.flac at real-time pace, again and again; `--unary` tasks each send sentence
embeddings (feature-extraction) one after another, all at once, for `--minutes`. A unary answer is wrong when
it differs from the same sentence's answer computed alone before the soak (cosine < 0.999: batching may
change float rounding, never the vector); a stream is wrong when it ends without a final result or its
finals are further than `--max-wer` from the recording's reference. Lost: any call or stream that ended
with an error. Unfinished: calls still running `--drain-s` after the soak ended (cancelled then; a
failure too: an overloaded server must refuse, not stall). Memory: the server's RSS sampled every 5 s (after the first minute of warm-up, the last
sample may exceed the first by at most `--max-growth` percent).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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


@dataclass
class Tally:
    ok: int = 0
    wrong: int = 0
    lost: int = 0
    unfinished: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        self.lost += 1
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1


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
    asr: Any, path: Any, reference: str, until: float, tally: Tally, max_wer: float
) -> None:
    from pipelined.streaming import FileSource
    from wer import wer

    while time.monotonic() < until:
        started = time.monotonic()
        finals: list[str] = []
        try:
            async for result in asr.stream(FileSource(path, realtime=True)):
                if result.is_final:
                    finals.append(result.text)
        except Exception as exc:
            tally.error(exc)
            continue
        tally.latencies.append(time.monotonic() - started)
        if finals and wer(reference, " ".join(finals)) <= max_wer:
            tally.ok += 1
        else:
            tally.wrong += 1


async def sample_rss(
    pid: int, until: float, samples: list[tuple[float, float]], tallies: dict[str, Tally]
) -> None:
    """RSS every 5 s; a progress line every 30 s (a run cut short still says what it saw)."""
    process = psutil.Process(pid)
    start = time.monotonic()
    while time.monotonic() < until:
        rss = process.memory_info().rss + sum(c.memory_info().rss for c in process.children(recursive=True))
        samples.append((time.monotonic() - start, rss / 2**20))
        if len(samples) % 6 == 0:
            counts = "; ".join(f"{k}: ok {t.ok} wrong {t.wrong} lost {t.lost}" for k, t in tallies.items())
            print(f"[{samples[-1][0]:.0f} s] RSS {samples[-1][1]:.0f} MiB; {counts}", flush=True)
        await asyncio.sleep(5)


async def soak(
    args: argparse.Namespace, target: str, pid: int
) -> tuple[Tally, Tally, list[tuple[float, float]]]:
    from pipelined.aio import Client

    client = Client(target)
    embed = client.pipeline("feature-extraction", model=args.unary_model)
    asr = client.pipeline("automatic-speech-recognition", model=args.stream_model)
    expected = [np.asarray(await embed(s), dtype=np.float32).ravel() for s in SENTENCES]
    path = args.data / "audio" / "jfk.flac"
    manifest = json.loads((args.data / "manifest.json").read_text())
    reference = next(e["reference"] for e in manifest if e["file"] == "audio/jfk.flac")
    until = time.monotonic() + args.minutes * 60
    unary, streams, rss = Tally(), Tally(), []
    sampler = asyncio.ensure_future(sample_rss(pid, until, rss, {"unary": unary, "streams": streams}))
    workers = {
        **{
            asyncio.ensure_future(unary_worker(embed, expected, until, unary, i)): unary
            for i in range(args.unary)
        },
        **{
            asyncio.ensure_future(stream_worker(asr, path, reference, until, streams, args.max_wer)): streams
            for _ in range(args.streams)
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
    parser.add_argument("--stream-model", default="whisper-tiny.en")
    parser.add_argument("--unary-model", default="all-minilm-l6-v2")
    parser.add_argument("--max-wer", type=float, default=0.5)
    parser.add_argument("--drain-s", type=float, default=60.0, help="wait for calls in flight at the end")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="the shared recordings folder")
    parser.add_argument("--max-growth", type=float, default=10.0, help="percent")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    server = ServerProcess([])
    # Stopped by a signal (a timeout), the server process still goes with us.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.wait_ready()
        unary, streams, rss = asyncio.run(soak(args, server.target, server.process.pid))
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
                statistics.median(lat) if lat else float("nan"),
                lat[int(0.99 * (len(lat) - 1))] if lat else float("nan"),
                ", ".join(f"{k}: {v}" for k, v in tally.errors.items()) or "-",
            ]
        )
    print(table(["calls", "ok", "wrong", "lost", "unfinished", "p50 s", "p99 s", "errors"], rows))
    warm = [mib for t, mib in rss if t >= 60] or [mib for _, mib in rss]
    growth = 100.0 * (warm[-1] - warm[0]) / warm[0] if warm else float("nan")
    print(
        table(
            [
                "RSS first MiB",
                "RSS after warm-up MiB",
                "RSS last MiB",
                "RSS max MiB",
                "growth after warm-up %",
            ],
            [[rss[0][1], warm[0], warm[-1], max(m for _, m in rss), growth]],
        )
    )
    print(
        f"command: python bench/soak.py --minutes {args.minutes:g} --streams {args.streams} --unary {args.unary}"
    )
    failed = sum(t.wrong + t.lost + t.unfinished for t in (unary, streams))
    if failed or growth > args.max_growth:
        raise SystemExit(
            f"soak failed: {failed} wrong, lost or unfinished responses, memory growth {growth:.1f}%"
        )


if __name__ == "__main__":
    main()
