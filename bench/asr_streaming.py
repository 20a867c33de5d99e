"""Live streaming: recordings replayed at real-time pace over 1, 2, 4 and 8 concurrent streams.

    python bench/asr_streaming.py [--model whisper-tiny.en] [--streams 1 2 4 8] [--clips-per-stream 3]
                                  [--torch-threads 1] [--replicas N] [--decode-interval 1.0]

The server runs `--replicas` pipelines of the model (default: cores / torch threads, 2 on a 2-core CPU),
one worker thread each, so a final decode can start while another stream's decode is running.

Each stream plays `--clips-per-stream` recordings one after another (a new call per recording, clips
rotated so concurrent streams play different ones). Per recording it measures the time from its first
chunk to its first interim result, and the lag from the end of its audio (the moment its last chunk was
"recorded") to its last final result. The streamed transcript is scored against the same server's
offline (unary) transcript of the same file, and both against the human reference. "RTF" is the
server's CPU time per second of audio streamed; "server CPU" is its average number of busy cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from common import SHARED_DATA, ServerProcess, clips, percentile, table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fixtures"))
from wer import wer  # noqa: E402

CLIPS = [
    "audio/jfk.flac",
    "audio/LJ001-0001.wav",
    "audio/LJ001-0003.wav",
    "audio/LJ001-0004.wav",
    "audio/librispeech-1995-1837-0001.wav",
]


@dataclass
class Run:
    clip: str
    first_interim_s: float
    final_lag_s: float
    text: str


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stream_clip(target: str, path: Path, options: dict[str, object]) -> Run:
    from pipelined import Client
    from pipelined.streaming import FileSource

    source = FileSource(path, chunk_s=0.1, realtime=True)
    finals: list[str] = []
    first_interim = float("nan")
    last_final_at = time.monotonic()
    started = time.monotonic()
    with Client(target, timeout=600) as client:
        for result in client.pipeline("automatic-speech-recognition").stream(source, **options):
            now = time.monotonic()
            if result.event is None and not result.is_final and first_interim != first_interim:
                first_interim = now - started
            if result.is_final:
                finals.append(result.text)
                last_final_at = now
    assert source.finished_at is not None
    return Run(path.name, first_interim, max(0.0, last_final_at - source.finished_at), " ".join(finals))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--clips-per-stream", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--replicas", type=int, default=None, help="default: cores / torch threads")
    parser.add_argument("--decode-interval", type=float, default=1.0)
    args = parser.parse_args()
    replicas = args.replicas or max(1, (os.cpu_count() or 1) // args.torch_threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    paths = clips(CLIPS)
    manifest = {e["file"]: e["reference"] for e in json.loads((SHARED_DATA / "manifest.json").read_text())}
    references = {Path(c).name: manifest[c] for c in CLIPS}
    options = {"min_decode_interval_s": args.decode_interval}

    server = ServerProcess(
        ["--model", args.model, "--replicas", str(replicas)], torch_threads=args.torch_threads
    )
    rows = []
    try:
        server.wait_ready()
        from pipelined import Client

        offline = {
            p.name: Client(server.target).pipeline("automatic-speech-recognition")(str(p))["text"]
            for p in paths
        }
        stream_clip(server.target, paths[2], options)  # warm-up
        for n in args.streams:
            runs: list[Run] = []
            lock = threading.Lock()

            def worker(index: int, n: int = n, runs: list[Run] = runs, lock: threading.Lock = lock) -> None:
                for k in range(args.clips_per_stream):
                    run = stream_clip(server.target, paths[(index + k * n) % len(paths)], options)
                    with lock:
                        runs.append(run)

            cpu0, wall0 = cpu_seconds(server.process.pid), time.monotonic()
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            cpu, wall = cpu_seconds(server.process.pid) - cpu0, time.monotonic() - wall0
            audio_s = sum(_duration(paths, r.clip) for r in runs)
            lags = [r.final_lag_s for r in runs]
            firsts = [r.first_interim_s for r in runs if r.first_interim_s == r.first_interim_s]
            stream_wer = wer(" ".join(offline[r.clip] for r in runs), " ".join(r.text for r in runs))
            ref_stream = wer(" ".join(references[r.clip] for r in runs), " ".join(r.text for r in runs))
            ref_offline = wer(
                " ".join(references[r.clip] for r in runs), " ".join(offline[r.clip] for r in runs)
            )
            rows.append(
                [
                    n,
                    len(runs),
                    percentile(firsts, 50),
                    percentile(lags, 50),
                    percentile(lags, 95),
                    max(lags),
                    stream_wer,
                    ref_stream,
                    ref_offline,
                    cpu / audio_s,
                    cpu / wall,
                ]
            )
    finally:
        server.stop()
    print(
        f"model={args.model} torch_threads={args.torch_threads} replicas={replicas} "
        f"decode_interval={args.decode_interval}s "
        f"clips_per_stream={args.clips_per_stream} cores={os.cpu_count()}"
    )
    print(f"load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(
        table(
            [
                "streams",
                "recordings",
                "first interim p50 s",
                "final lag p50 s",
                "final lag p95 s",
                "final lag max s",
                "WER vs offline",
                "WER stream vs ref",
                "WER offline vs ref",
                "RTF (CPU s/audio s)",
                "server CPU cores",
            ],
            rows,
        )
    )


_DURATIONS: dict[str, float] = {}


def _duration(paths: list[Path], name: str) -> float:
    if name not in _DURATIONS:
        import soundfile

        _DURATIONS[name] = soundfile.info(str(next(p for p in paths if p.name == name))).duration
    return _DURATIONS[name]


if __name__ == "__main__":
    main()
