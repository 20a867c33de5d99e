"""The in-process pipeline's single call, back to back against the same call after an idle gap.

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/idle_gaps.py [--gaps 0 0.5 1 2 4] [--calls 400]

Question: issue 9's c=1 target compares a served call with the in-process pipeline called in a tight loop
(the peers' `inproc_baseline.py`). A served call at c=1 never runs in a tight loop: between two calls the
model waits while the client, gRPC and the server process do their part (the gRPC floor alone is about
0.7 ms). How much slower is the same call once the core has run something else or slept for that long?

Model: the peers' tiny random text classifier (`$PEERS`, else ~/.cache/pipelined-peers), loaded as the
server loads it (`loading.load_pipeline`), one torch thread, one input per call through `loading.run_batch`
(what a model process runs for a lone call). For each gap in ms, `--calls` calls, the gaps taken in turn
call by call (the machine's drift hits each alike); a gap is a sleep (the core goes idle or runs another
process) or, with `--spin`, a busy loop of the same length (the core stays busy in this process). Prints
the p10 and median call time per gap, and the median's excess over back to back.

Measured (`--calls 300`, quiet but slow phase of the shared 2-core machine, back to back 4.32 ms median):
after 1, 2 and 4 ms of sleep +0.24, +0.60 and +1.21 ms; busy-waited instead, +0.0, +0.40 and +1.02 ms. So
keeping the model process spinning between calls would not keep the call fast, and a c=1 client, whose calls
reach the model 3-5 ms apart, cannot see the tight loop's figure even with no transport at all.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from common import table

TEXT = "the service answered every request within its deadline"


def _gap(seconds: float, spin: bool) -> None:
    if seconds <= 0:
        return
    if not spin:
        time.sleep(seconds)
        return
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gaps", type=float, nargs="+", default=[0, 0.5, 1, 2, 4], help="ms between calls")
    ap.add_argument("--calls", type=int, default=400, help="calls per gap")
    ap.add_argument("--spin", action="store_true", help="busy-wait the gaps instead of sleeping")
    args = ap.parse_args()
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import load_pipeline, run_batch

    model = Path(os.environ.get("PEERS", Path.home() / ".cache" / "pipelined-peers")) / "tiny-textcls"
    if not (model / "config.json").exists():
        raise SystemExit(f"{model} is absent: bash ../shared/peers/setup.sh builds it")
    torch.set_num_threads(1)
    pipe = load_pipeline(ModelSpec(name="m", task="text-classification", source=str(model))).pipeline
    for _ in range(50):
        run_batch(pipe, [TEXT], {})
    spent: dict[float, list[float]] = {gap: [] for gap in args.gaps}
    for _ in range(args.calls):
        for gap in args.gaps:
            _gap(gap / 1000, args.spin)
            # A gap of 0 is a call straight after the previous gap's call: back to back.
            started = time.perf_counter()
            run_batch(pipe, [TEXT], {})
            spent[gap].append((time.perf_counter() - started) * 1000)
    base = statistics.median(spent[min(args.gaps)])
    rows = []
    for gap, times in spent.items():
        median = statistics.median(times)
        rows.append(
            (
                f"{gap:g}",
                f"{statistics.quantiles(times, n=10)[0]:.2f}",
                f"{median:.2f}",
                f"{median - base:+.2f}",
            )
        )
    waited = "busy-waited" if args.spin else "slept"
    print(
        table([f"gap before the call, ms ({waited})", "p10 ms", "median ms", "median - smallest gap's"], rows)
    )


if __name__ == "__main__":
    main()
