"""How close is the start-up calibration of a live stream's cost to the cost measured from real speech?

    python bench/stream_calibration.py [--model whisper-tiny.en] [--streams 1 2] [--seconds 90]

One server process (`--workers 1`, one replica per `--torch-threads`): the calibrated share of the model
one real-time stream takes is read from `pipelined_stream_share` once the server is SERVING, before any
stream (streaming/calibration.py), with the seconds the calibration took (from the server's log). Then,
for each level, that many streams replay the shared recordings at real-time pace (bench/asr_streaming.py's
program: recordings joined with 0.4 s gaps, 100 ms chunks) for `--seconds`, and the gauge, which then
shows the share measured from the streams' decodes over the last 10 s (admission.py), is read every second
once a full horizon of the level has passed. The table gives the calibrated share, the measured median
and p90, their ratio, and the streams each admits within `admission_max_utilization` (0.85).
A ratio above 1: the calibration is pessimistic (a fresh server admits fewer streams than it measures later).
Admission is lifted for the run (`admission_max_utilization` 100), so every level measures all its streams.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import tempfile
import threading
import time
from pathlib import Path

from asr_streaming import CLIPS, RATE, Stream, play, program
from common import clips, percentile, table
from harness import ServerProcess

SHARE = "pipelined_stream_share"
# The measured share covers the last 10 s (admission._HORIZON_S): read it only once a level filled it.
_SETTLE_S = 12.0
_UTILIZATION = 0.85


def fits(share: float) -> int:
    return math.floor(_UTILIZATION / share + 1e-9) if share > 0 else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="whisper-tiny.en")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seconds", type=float, default=90.0, help="audio per stream and level")
    parser.add_argument("--torch-threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["PIPELINED_STREAMING__ADMISSION_MAX_UTILIZATION"] = "100"
    from pipelined import Client
    from pipelined_server.audio import decode_encoded

    recordings = [decode_encoded(p.read_bytes(), RATE) for p in clips(CLIPS)]
    log_dir = Path(tempfile.mkdtemp(prefix="stream-calibration-"))
    server = ServerProcess(["--model", args.model, "--torch-threads", str(args.torch_threads)], log_dir)
    rows = []
    try:
        server.wait_serving(Client(server.target), timeout_s=600)
        calibrated = server.metric(SHARE, model=args.model)
        took = re.search(r"calibrated in ([0-9.]+) s", server.log.read_text())
        calibration_s = float(took.group(1)) if took else float("nan")
        for n in args.streams:
            streams = [Stream(*program(recordings, i, args.seconds)) for i in range(n)]
            threads = [
                threading.Thread(target=play, args=(server.target, s, {"interim_results": True}))
                for s in streams
            ]
            for t in threads:
                t.start()
            started, measured = time.monotonic(), []
            while any(t.is_alive() for t in threads):
                time.sleep(1.0)
                if time.monotonic() - started > _SETTLE_S and any(t.is_alive() for t in threads):
                    measured.append(server.metric(SHARE, model=args.model))
            for t in threads:
                t.join()
            errors = [s.error for s in streams if s.error]
            median = percentile(measured, 50)
            rows.append(
                [
                    n,
                    calibrated,
                    median,
                    percentile(measured, 90),
                    calibrated / median if median else float("nan"),
                    fits(calibrated),
                    fits(median) if median == median else 0,
                    calibration_s,
                    "; ".join(errors) or "-",
                ]
            )
            print(table(HEADERS, rows[-1:]), flush=True)
    finally:
        server.stop()
    print(
        f"\nmodel={args.model} torch_threads={args.torch_threads} workers=1 seconds_per_stream={args.seconds} "
        f"cores={os.cpu_count()} load average (1, 5, 15 min) at the end: {os.getloadavg()}"
    )
    print(table(HEADERS, rows))


HEADERS = [
    "streams",
    "calibrated share",
    "measured share p50",
    "measured p90",
    "calibrated / measured",
    "streams fit (calibrated)",
    "streams fit (measured)",
    "calibration s",
    "errors",
]


if __name__ == "__main__":
    main()
